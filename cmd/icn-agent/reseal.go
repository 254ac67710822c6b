package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/provision"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/unlock"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "reseal",
		Args:    "NAME [--pcrs 0,7] [--signed-policy KEY.pub] [--pin-file F] [--new-pin [--new-pin-file F] | --no-pin]",
		Summary: "Unseal an identity in the current platform state and seal it again: to the PCRs' current values, to other PCRs (--pcrs), or to signed policies (--signed-policy). The new blob must unseal before it replaces the old one.",
		Run:     runReseal,
	})
}

// Reseal keeps everything but the policy: the key, its name and comment,
// and, unless told otherwise, its PIN (the one just used to unseal), its
// PCR selection and kind of policy (fixed values, or the same signing key).
//
// The store's ReplaceChecked does the replacing: the old blob is linked to
// NAME.sealed.bak, the new one is written to a temporary file, read back
// and unsealed once (its public key must be the identity's), and only
// then renamed over NAME.sealed; the backup is removed after that, so
// that a blob bound to the old (perhaps weaker) policy does not linger. A
// reseal that cannot unseal the old blob writes nothing at all.

func runReseal(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("reseal")
	var pcrs pcrList
	fs.Var(&pcrs, "pcrs", "PCRs (SHA-256 bank) to bind to from now on (default: the ones it is bound to now)")
	signedPolicy := fs.String("signed-policy", "", "seal to policies signed by this policy key (a PEM public key from icn-agent policy-key create) from now on (default: keep the kind of policy, and the key, it has)")
	pinFile := fs.String("pin-file", "", "for a PIN-protected identity: read its PIN from the first line of this file instead of the terminal")
	newPIN := fs.Bool("new-pin", false, "protect the identity with a new PIN from now on, asked twice on the terminal")
	newPINFile := fs.String("new-pin-file", "", "with --new-pin: read the new PIN from the first line of this file instead")
	noPIN := fs.Bool("no-pin", false, "remove the identity's PIN protection")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	switch {
	case *newPINFile != "" && !*newPIN:
		return cli.Usagef("--new-pin-file gives the PIN of --new-pin; add --new-pin")
	case *newPIN && *noPIN:
		return cli.Usagef("--new-pin and --no-pin exclude each other")
	}
	name := pos[0]
	if err := sealstore.ValidName(name); err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	old, err := loadToUnseal(store, name)
	if err != nil {
		return err
	}

	var change provision.Change
	if pcrs.set {
		change.PCRs = pcrs.pcrs
	}
	if *signedPolicy != "" {
		if change.Signer, err = readPolicyKey(*signedPolicy); err != nil {
			return err
		}
	}
	opts, signer, err := change.SealOptions(old)
	if err != nil {
		return err
	}

	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	seed, pin, err := unsealForCommand(ctx, tpm, store, old, *pinFile, f.log)
	if errors.Is(err, provision.ErrSeedMismatch) {
		return fmt.Errorf("%s: %w; nothing was changed", name, err)
	}
	if err != nil {
		return fmt.Errorf("cannot unseal %s in the current platform state, so nothing was changed: %w%s", name, err, resealHint(err, name))
	}
	defer seed.Destroy()
	defer secmem.Wipe(pin)
	switch {
	case *noPIN:
		pin = nil
	case *newPIN:
		secmem.Wipe(pin)
		if pin, err = readPIN(*newPINFile, name, true); err != nil {
			return fmt.Errorf("%w; nothing was changed", err)
		}
		defer secmem.Wipe(pin)
	}
	opts.PIN = pin
	blob, err := provision.Reseal(ctx, tpm, store, old, seed.Bytes(), opts, func(b *sealstore.Blob) []*sealstore.SignedPolicy {
		return unlock.SignedPolicies(store, b, f.log)
	})
	if errors.Is(err, sealstore.ErrResealPending) {
		blobPath := filepath.Join(store.Dir(), name+".sealed")
		return cli.WithHint(err, fmt.Sprintf("if no reseal is running, check that %s is intact (icn-agent check %s) and remove %s.bak", blobPath, name, blobPath))
	}
	if err != nil {
		if blob != nil {
			err = explainUnseal(ctx, tpm, store, blob, err)
		}
		return err
	}
	how := "to their current values"
	if signer != nil {
		how = "to policies signed by key " + signer.ID()
	}
	switch {
	case *newPIN:
		how += ", with its new PIN"
	case blob.Policy.PIN:
		how += ", with its PIN"
	case old.Policy.PIN:
		how += ", without a PIN now"
	}
	fmt.Fprintf(e.Stdout, "resealed %s (%s): PCRs %s %s\n", name, ssh.FingerprintSHA256(blob.PublicKey), joinInts(blob.Policy.Indexes()), how)
	return nil
}

// resealHint tells what to do when the blob to reseal does not unseal.
func resealHint(err error, name string) string {
	if errors.Is(err, tpmseal.ErrPCRMismatch) {
		return fmt.Sprintf("; reseal it while the platform is in the state it was sealed in (for example before a firmware update; see docs/pcr-policies.md), or restore it from a backup with icn-agent restore %s BACKUP", name)
	}
	return ""
}
