package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"filippo.io/age"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/provision"
	"github.com/icn/icn-agent/internal/recovery"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/unlock"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "keygen",
		Args:    "NAME [--host] [--pcrs 0,7] [--signed-policy KEY.pub] [--pin [--pin-file F]] [--comment TEXT] [--backup FILE [--recipient R]... [--backup-passphrase-file F]]",
		Summary: "Generate a new Ed25519 identity sealed to this TPM and print its public key; --backup also writes an encrypted backup.",
		Run:     runKeygen,
	})
	commands.Register(&cli.Command{
		Name:    "import",
		Args:    "NAME FILE [--pcrs 0,7] [--signed-policy KEY.pub] [--pin [--pin-file F]] [--comment TEXT] [--passphrase-file F] [-i IDENTITY]... [--backup FILE [--recipient R]... [--backup-passphrase-file F]]",
		Summary: "Seal an existing OpenSSH Ed25519 private key (plain, passphrase-protected or age-encrypted) to this TPM. FILE is left as it is; the comment comes from FILE.pub if it is there.",
		Run:     runImport,
	})
}

type sealFlags struct {
	common
	pcrs    pcrList
	comment string
	policy  policyFlags
}

func (s *sealFlags) register(c *cli.Command) *flag.FlagSet {
	fs := cli.FlagSet(c)
	s.common.register(fs)
	fs.Var(&s.pcrs, "pcrs", "PCRs (SHA-256 bank) to bind the seed to (default from config, else 0,7)")
	fs.StringVar(&s.comment, "comment", "", "comment for the public key (default: the name)")
	s.policy.register(fs)
	return fs
}

// policyFlags are keygen's and import's choice of policy: signed PCR
// policies instead of fixed PCR values, and a PIN.
type policyFlags struct {
	signedPolicy string
	pin          bool
	pinFile      string
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.signedPolicy, "signed-policy", "", "seal to PCR policies signed by this policy key (a PEM public key from icn-agent policy-key create) instead of the PCRs' current values")
	fs.BoolVar(&p.pin, "pin", false, "also protect the identity with a PIN, asked on the terminal twice (the TPM locks out after a few wrong PINs)")
	fs.StringVar(&p.pinFile, "pin-file", "", "with --pin: read the PIN from the first line of this file instead of the terminal")
}

func (p *policyFlags) check() error {
	if p.pinFile != "" && !p.pin {
		return cli.Usagef("--pin-file gives the PIN of --pin; add --pin")
	}
	return nil
}

// apply checks the flags, reads the policy key of --signed-policy and
// the new PIN of --pin (asked for or read now), and sets them in opts. It
// returns the key (nil if not given) and the PIN (nil if not given),
// which the caller wipes.
func (p *policyFlags) apply(opts *tpmseal.SealOptions) (*sealstore.PolicyKey, []byte, error) {
	if err := p.check(); err != nil {
		return nil, nil, err
	}
	var key *sealstore.PolicyKey
	if p.signedPolicy != "" {
		var err error
		if key, err = readPolicyKey(p.signedPolicy); err != nil {
			return nil, nil, err
		}
		opts.Signer = key.Public
	}
	if !p.pin {
		return key, nil, nil
	}
	pin, err := readPIN(p.pinFile, opts.Name, true)
	if err != nil {
		return nil, nil, err
	}
	opts.PIN = pin
	return key, pin, nil
}

// backupFlags are keygen's and import's: write an encrypted backup of the
// new identity as well.
type backupFlags struct {
	path string
	enc  encryptFlags
}

func (b *backupFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.path, "backup", "", "also write an encrypted backup of the key to this new file (see icn-agent backup)")
	b.enc.register(fs)
}

func (b *backupFlags) check() error {
	if b.path == "" && b.enc.given() {
		return cli.Usagef("--recipient and --backup-passphrase-file need --backup FILE")
	}
	return b.enc.check()
}

func runKeygen(e *cli.Env, args []string) error {
	c := commands.Lookup("keygen")
	var f sealFlags
	var bf backupFlags
	fs := f.register(c)
	bf.register(fs)
	host := fs.Bool("host", false, "a host key for sshd (HostKeyAgent): seal into the system instance's store ("+hostStore+") unless --store, and print the sshd_config lines")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	if *host {
		hostKeyDefaults(&f)
	}
	if err := bf.check(); err != nil {
		return err
	}
	if err := f.policy.check(); err != nil {
		return err
	}
	if err := sealIdentity(e, &f, &bf, pos[0], nil); err != nil {
		return err
	}
	if *host {
		printHostKeyConfig(e, &f, pos[0])
	}
	return nil
}

func runImport(e *cli.Env, args []string) error {
	c := commands.Lookup("import")
	var f sealFlags
	var bf backupFlags
	var dec decryptFlags
	fs := f.register(c)
	bf.register(fs)
	dec.register(fs, "read the key's passphrase (or, for an age-encrypted FILE, the age passphrase) from the first line of this file instead of asking on the terminal")
	pos, err := commands.ParseN(e, c, fs, args, 2, "want NAME and FILE")
	if err != nil {
		return err
	}
	if err := bf.check(); err != nil {
		return err
	}
	if err := f.policy.check(); err != nil {
		return err
	}
	name, file := pos[0], pos[1]
	if err := sealstore.ValidName(name); err != nil {
		return err
	}
	seed, err := readEd25519Seed(file, &dec)
	if err != nil {
		return err
	}
	defer seed.Destroy()
	if f.comment == "" {
		f.comment = recovery.PublicKeyComment(file+".pub", seed.Bytes())
	}
	return sealIdentity(e, &f, &bf, name, seed.Bytes())
}

// sealIdentity seals seed (a new one if nil) as NAME, writes its backup if
// asked to, and prints the public key line. Nothing is written unless
// sealing and the backup succeed, and an existing identity or backup file
// is never replaced.
func sealIdentity(e *cli.Env, f *sealFlags, bf *backupFlags, name string, seed []byte) error {
	if err := sealstore.ValidName(name); err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(store.Path(name)); err == nil {
		return fmt.Errorf("identity %q already exists in %s; pick another name, or remove %s first", name, store.Dir(), store.Path(name))
	}
	var recipients []age.Recipient
	if bf.path != "" {
		if err := checkNewFile(bf.path, "backup file"); err != nil {
			return err
		}
		if recipients, err = bf.enc.resolve(bf.path); err != nil {
			return err
		}
	}
	opts := tpmseal.SealOptions{Name: name, Comment: f.comment, PCRs: f.pcrs.or(f.cfg.Identity.TPM.PCRs)}
	signer, pin, err := f.policy.apply(&opts)
	if err != nil {
		return err
	}
	defer secmem.Wipe(pin)
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	var backup *provision.Backup
	if bf.path != "" {
		backup = &provision.Backup{Path: bf.path, Recipients: recipients}
	}
	blob, err := provision.Create(ctx, tpm, store, seed, opts, backup)
	if errors.Is(err, recovery.ErrFileExists) {
		return fmt.Errorf("%w; nothing was written", fileExistsError(err, bf.path, "backup file"))
	}
	if err != nil {
		return err
	}
	if bf.path != "" {
		fmt.Fprintf(e.Stderr, "icn-agent: wrote backup %s, encrypted %s; keep it off this machine\n", bf.path, bf.enc.describe(len(recipients)))
	}
	if signer != nil {
		// Sealing needs no signed policy; using the identity does.
		err := tpmseal.CheckPolicy(ctx, tpm, blob, unlock.SignedPolicies(store, blob, f.log))
		var mp *sealstore.MissingPolicyError
		if errors.As(err, &mp) {
			fmt.Fprintf(e.Stderr, "icn-agent: %s is sealed to policies signed by key %s, and none approves the current PCR values yet: %v\n", name, signer.ID(), explainUnseal(ctx, tpm, store, blob, err))
		}
	}
	_, err = e.Stdout.Write(blob.AuthorizedKey())
	return err
}

// maxKeyFile bounds the small key files commands read.
const maxKeyFile = recovery.MaxKeyFile

// readEd25519Seed reads an Ed25519 private key to import
// (recovery.ReadEd25519Seed) and returns its seed in locked memory.
func readEd25519Seed(file string, dec *decryptFlags) (*secmem.Buffer, error) {
	seed, err := recovery.ReadEd25519Seed(file, recovery.KeyFileOptions{
		Keys:       func() (*recovery.Keys, error) { return dec.keys(file) },
		Passphrase: func() ([]byte, error) { return passphrase(file, dec.passFile, false) },
	})
	var de *recovery.DecryptError
	switch {
	case errors.As(err, &de):
		return nil, dec.decryptError(file, de.Err)
	case errors.Is(err, recovery.ErrBackupNotKey):
		return nil, fmt.Errorf("%w: restore it with icn-agent restore NAME %s", err, file)
	case errors.Is(err, recovery.ErrWrongPassphrase):
		return nil, fmt.Errorf("%w; nothing was written", err)
	case errors.Is(err, recovery.ErrNotPrivateKey):
		return nil, fmt.Errorf("%w; icn-agent imports OpenSSH Ed25519 keys such as ~/.ssh/id_ed25519", err)
	case errors.Is(err, recovery.ErrNotEd25519):
		return nil, fmt.Errorf("%w; icn-agent seals only Ed25519 keys (make one with ssh-keygen -t ed25519, or use icn-agent keygen)", err)
	}
	return seed, err
}
