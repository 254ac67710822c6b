package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/prompt"
	"github.com/icn/icn-agent/internal/recovery"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "backup",
		Args:    "NAME -o FILE [--recipient R]... [--backup-passphrase-file F]",
		Summary: "Write an encrypted backup of an identity (age, to recipients or a passphrase). FILE is never overwritten.",
		Run:     runBackup,
	})
	commands.Register(&cli.Command{
		Name:    "restore",
		Args:    "NAME FILE [--pcrs 0,7] [--comment TEXT] [-i IDENTITY]... [--passphrase-file F]",
		Summary: "Seal the identity in a backup FILE to this TPM as NAME. An existing identity is never replaced.",
		Run:     runRestore,
	})
}

// encryptFlags say whom a new backup is encrypted to.
type encryptFlags struct {
	recipients cli.Strings
	passFile   string
}

func (b *encryptFlags) register(fs *flag.FlagSet) {
	fs.Var(&b.recipients, "recipient", "encrypt the backup to R: an age recipient (age1...), an SSH public key line (ssh-ed25519 AAAA...), or a file of them; repeatable")
	fs.StringVar(&b.passFile, "backup-passphrase-file", "", "encrypt the backup with the passphrase on the first line of this file (default without --recipient: ask on the terminal)")
}

func (b *encryptFlags) given() bool { return len(b.recipients) > 0 || b.passFile != "" }

func (b *encryptFlags) check() error {
	if len(b.recipients) > 0 && b.passFile != "" {
		return cli.Usagef("use --recipient or --backup-passphrase-file, not both (age encrypts a file to a passphrase alone)")
	}
	return nil
}

// resolve returns the age recipients for backup file path: those given with
// --recipient, else the passphrase from --backup-passphrase-file, else a
// passphrase asked for twice on the terminal.
func (b *encryptFlags) resolve(path string) ([]age.Recipient, error) {
	if len(b.recipients) > 0 {
		return recovery.ParseRecipientArgs(b.recipients)
	}
	pass, err := passphrase(path, b.passFile, true)
	if err != nil {
		return nil, err
	}
	defer secmem.Wipe(pass)
	r, err := recovery.PassphraseRecipient(pass, 0)
	if err != nil {
		return nil, err
	}
	return []age.Recipient{r}, nil
}

// describe says in words how a backup is encrypted, for messages.
func (b *encryptFlags) describe(n int) string {
	switch {
	case len(b.recipients) == 0:
		return "with a passphrase"
	case n == 1:
		return "to 1 recipient"
	}
	return fmt.Sprintf("to %d recipients", n)
}

// passphrase reads a passphrase from the first line of passFile or, if
// that is empty, from the terminal: the one of the encrypted file, or with
// confirm a new one for the backup file, asked twice. The caller wipes it.
func passphrase(file, passFile string, confirm bool) ([]byte, error) {
	if passFile != "" {
		pass, err := prompt.FileLine(passFile)
		switch {
		case err != nil:
			return nil, fmt.Errorf("passphrase file: %w", err)
		case confirm && len(pass) == 0:
			return nil, fmt.Errorf("%s: the first line is empty; put the passphrase there", passFile)
		}
		return pass, nil
	}
	ask := func() ([]byte, error) { return prompt.Terminal(fmt.Sprintf("Enter passphrase for %s: ", file)) }
	if confirm {
		ask = func() ([]byte, error) {
			return prompt.TerminalTwice(fmt.Sprintf("Passphrase for the backup %s: ", file), "Same passphrase again: ")
		}
	}
	pass, err := ask()
	switch {
	case errors.Is(err, prompt.ErrNoTerminal) && confirm:
		return nil, fmt.Errorf("no terminal to ask for a passphrase for %s; pass --recipient R (an age or SSH public key) or --backup-passphrase-file FILE", file)
	case errors.Is(err, prompt.ErrNoTerminal):
		return nil, fmt.Errorf("%s is encrypted and there is no terminal to ask for its passphrase; pass --passphrase-file FILE", file)
	case errors.Is(err, prompt.ErrMismatch):
		return nil, errors.New("the passphrases differ; nothing was written")
	case err != nil:
		return nil, fmt.Errorf("read passphrase: %w", err)
	case confirm && len(pass) == 0:
		return nil, errors.New("empty passphrase; nothing was written")
	}
	return pass, nil
}

// decryptFlags say how to decrypt an age file: identities (-i) and, for a
// passphrase-encrypted file, --passphrase-file or the terminal.
type decryptFlags struct {
	identities cli.Strings
	passFile   string
}

func (d *decryptFlags) register(fs *flag.FlagSet, passUsage string) {
	fs.Var(&d.identities, "i", "decrypt with this identity file: an age identity (AGE-SECRET-KEY-1...) or an SSH private key; repeatable")
	fs.StringVar(&d.passFile, "passphrase-file", "", passUsage)
}

// keys returns the keys to decrypt file with. Identity files are read now;
// passphrases are asked for only when needed.
func (d *decryptFlags) keys(file string) (*recovery.Keys, error) {
	k := &recovery.Keys{Passphrase: func() ([]byte, error) { return askPassphrase(file, d.passFile) }}
	ids, err := recovery.ReadIdentityFiles(d.identities, func(path string) func() ([]byte, error) {
		return func() ([]byte, error) { return askPassphrase(path, d.passFile) }
	})
	if err != nil {
		return nil, err
	}
	k.Identities = ids
	return k, nil
}

// passphraseError is an error getting a passphrase (no terminal, no
// file); it already says what to do.
type passphraseError struct{ err error }

func (e *passphraseError) Error() string { return e.err.Error() }
func (e *passphraseError) Unwrap() error { return e.err }

// askPassphrase is readPassphrase with its errors marked as
// passphraseError.
func askPassphrase(file, passFile string) ([]byte, error) {
	p, err := passphrase(file, passFile, false)
	if err != nil {
		return nil, &passphraseError{err}
	}
	return p, nil
}

// decryptError turns an error from decrypting file into one that says what
// to do.
func (d *decryptFlags) decryptError(file string, err error) error {
	var nm *recovery.NoMatchError
	var pe *passphraseError
	switch {
	case errors.As(err, &pe):
		return pe.err
	case errors.Is(err, recovery.ErrWrongPassphrase):
		return fmt.Errorf("wrong passphrase for %s; nothing was written", file)
	case errors.Is(err, recovery.ErrEmptyPassphrase):
		return fmt.Errorf("empty passphrase for %s; nothing was written", file)
	case errors.As(err, &nm) && len(d.identities) == 0:
		return fmt.Errorf("%s is encrypted to %s; pass -i FILE with the matching age identity or SSH private key", file, nm.RecipientKinds())
	case errors.As(err, &nm):
		return fmt.Errorf("none of the identities given with -i can decrypt %s (it is encrypted to %s); nothing was written", file, nm.RecipientKinds())
	case errors.Is(err, recovery.ErrNotAge):
		return fmt.Errorf("%s is not age-encrypted; want a backup written by icn-agent backup or keygen --backup", file)
	}
	return fmt.Errorf("cannot decrypt %s: %v; nothing was written", file, strings.TrimPrefix(err.Error(), "recovery: "))
}

// checkNewFile fails if path exists: backups and migration files are never
// overwritten.
func checkNewFile(path, what string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s %s already exists; icn-agent never overwrites one: pick a new file name", what, path)
	}
	return nil
}

// fileExistsError rewords recovery.ErrFileExists for a file that appeared
// since checkNewFile.
func fileExistsError(err error, path, what string) error {
	if errors.Is(err, recovery.ErrFileExists) {
		return fmt.Errorf("%s %s already exists; icn-agent never overwrites one: pick a new file name", what, path)
	}
	return err
}

func runBackup(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("backup")
	var enc encryptFlags
	enc.register(fs)
	out := fs.String("o", "", "write the backup to this new file (required)")
	pinFile := fs.String("pin-file", "", "for a PIN-protected identity, read its PIN from this file instead of asking")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	if *out == "" {
		return cli.Usagef("-o FILE is required: the file to write the backup to")
	}
	if err := enc.check(); err != nil {
		return err
	}
	name := pos[0]
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	b, err := loadToCopy(store, name, "a damaged identity cannot be backed up: restore it from an earlier backup")
	if err != nil {
		return err
	}
	if err := checkNewFile(*out, "backup file"); err != nil {
		return err
	}
	recipients, err := enc.resolve(*out)
	if err != nil {
		return err
	}
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	opts, err := unsealOptions(ctx, tpm, store, b, *pinFile, f.log)
	if err != nil {
		return err
	}
	defer secmem.Wipe(opts.PIN)
	if err := recovery.BackupIdentity(ctx, tpm, b, opts, *out, recipients...); err != nil {
		return fileExistsError(explainUnseal(ctx, tpm, store, b, err), *out, "backup file")
	}
	fmt.Fprintf(e.Stdout, "wrote %s: backup of %s (%s), encrypted %s; keep it off this machine\n", *out, name, ssh.FingerprintSHA256(b.PublicKey), enc.describe(len(recipients)))
	return nil
}

func runRestore(e *cli.Env, args []string) error {
	c := commands.Lookup("restore")
	var f sealFlags
	var dec decryptFlags
	fs := f.register(c)
	dec.register(fs, "read the backup's passphrase from the first line of this file (default: ask on the terminal); also unlocks an encrypted SSH identity")
	fs.Lookup("comment").Usage = "comment for the public key (default: the one in the backup)"
	pos, err := commands.ParseN(e, c, fs, args, 2, "want NAME and FILE")
	if err != nil {
		return err
	}
	name, file := pos[0], pos[1]
	if err := sealstore.ValidName(name); err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	if err := nameFree(store, name, "restore"); err != nil {
		return err
	}
	keys, err := dec.keys(file)
	if err != nil {
		return err
	}
	bk, err := recovery.ReadBackupFile(file, keys)
	if err != nil {
		return dec.decryptError(file, err)
	}
	defer bk.Destroy()
	comment := bk.Comment
	if cli.Given(fs, "comment") {
		comment = f.comment
	}
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	opts := tpmseal.SealOptions{Name: name, Comment: comment, PCRs: f.pcrs.or(f.cfg.Identity.TPM.PCRs)}
	_, pin, err := f.policy.apply(&opts)
	if err != nil {
		return err
	}
	defer secmem.Wipe(pin)
	blob, err := recovery.Restore(ctx, tpm, store, bk, opts)
	if err != nil {
		return err
	}
	if bk.Name != name {
		fmt.Fprintf(e.Stderr, "icn-agent restore: the backup of %q is now identity %q\n", bk.Name, name)
	}
	_, err = e.Stdout.Write(blob.AuthorizedKey())
	return err
}

// nameFree fails, saying what to do, if the store already has an identity
// called name, usable or damaged.
func nameFree(store *sealstore.Store, name, verb string) error {
	err := recovery.NameFree(store, name)
	if errors.Is(err, sealstore.ErrExists) {
		return fmt.Errorf("identity %q already exists in %s; %s under another name, or, if its blob is damaged, move %s away first (nothing is ever replaced)", name, store.Dir(), verb, store.Path(name))
	}
	return err
}
