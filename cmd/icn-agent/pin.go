package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/icn/icn-agent/internal/prompt"
	"github.com/icn/icn-agent/internal/provision"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/unlock"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// PINs in the commands: keygen, import and reseal read a new PIN from
// --pin-file or ask twice on the terminal; check, reseal and add read the
// PIN of an identity the same way, once, after checking that the policy
// can be satisfied (so a PIN is never spent on an unseal that cannot
// work). The agent's side is internal/unlock.

// minPINLen is the shortest PIN keygen and import accept.
const minPINLen = 4

// explainUnseal adds to an unseal error the TPM's dictionary-attack state
// (unlock.Explain) and what to do about it.
func explainUnseal(ctx context.Context, tpm tpmseal.TPM, store *sealstore.Store, b *sealstore.Blob, err error) error {
	return adviseUnseal(store, b, unlock.Explain(ctx, tpm, err))
}

// adviseUnseal adds what to do to an unseal error: how to leave a lockout,
// the command that signs missing PCR values.
func adviseUnseal(store *sealstore.Store, b *sealstore.Blob, err error) error {
	var mp *sealstore.MissingPolicyError
	switch {
	case errors.Is(err, unlock.ErrNoAskpass):
		return fmt.Errorf("%w: start icn-agent serve with SSH_ASKPASS set (for example to /usr/bin/ssh-askpass), or unlock it with icn-agent add", err)
	case errors.Is(err, tpmseal.ErrLockout):
		return fmt.Errorf("%w, or the TPM owner can reset it with tpm2_dictionarylockout --clear-lockout", err)
	case errors.As(err, &mp):
		dir := "STORE/policies"
		if store != nil {
			dir = store.PolicyDir()
		}
		return fmt.Errorf("%w: where the policy key %s is, run icn-agent policy sign --key KEYFILE --pcrs %s --values FILE, FILE holding the lines %s (or --values current on this machine), then put the .policy file it writes in %s",
			err, mp.KeyID, joinInts(b.Policy.Indexes()), sealstore.FormatPCRValues(mp.PCRs, " "), dir)
	}
	return err
}

// unsealOptions returns what tpmseal.UnsealWith needs to unseal b in a
// command: the store's signed policies and, for a PIN-protected identity,
// the PIN (readPIN). The caller wipes opts.PIN.
func unsealOptions(ctx context.Context, tpm tpmseal.TPM, store *sealstore.Store, b *sealstore.Blob, pinFile string, log *slog.Logger) (tpmseal.UnsealOptions, error) {
	opts, err := provision.UnsealOptions(ctx, tpm, b, unlock.SignedPolicies(store, b, log), func() ([]byte, error) {
		return readPIN(pinFile, b.Name, false)
	})
	if err != nil {
		return opts, explainUnseal(ctx, tpm, store, b, err)
	}
	return opts, nil
}

// unsealForCommand unseals b for a command (check, reseal) with
// unsealOptions, checking the seed against b's public key
// (provision.Unseal). It returns the seed, which the caller destroys, and
// the PIN used (nil if none), which the caller wipes.
func unsealForCommand(ctx context.Context, tpm tpmseal.TPM, store *sealstore.Store, b *sealstore.Blob, pinFile string, log *slog.Logger) (*secmem.Buffer, []byte, error) {
	opts, err := unsealOptions(ctx, tpm, store, b, pinFile, log)
	if err != nil {
		return nil, nil, err
	}
	seed, err := provision.Unseal(ctx, tpm, b, opts)
	if err != nil {
		secmem.Wipe(opts.PIN)
		return nil, nil, explainUnseal(ctx, tpm, store, b, err)
	}
	return seed, opts.PIN, nil
}

// readPIN reads a PIN from the first line of pinFile or, if pinFile is
// empty, from the terminal; a new PIN (confirm) is asked twice and must
// be at least minPINLen bytes.
func readPIN(pinFile, name string, confirm bool) ([]byte, error) {
	var pin []byte
	var err error
	switch {
	case pinFile != "":
		if pin, err = prompt.FileLine(pinFile); err != nil {
			return nil, fmt.Errorf("read PIN file: %w", err)
		}
		if len(pin) == 0 {
			return nil, fmt.Errorf("PIN file %s is empty: put the PIN on its first line", pinFile)
		}
	case confirm:
		pin, err = prompt.TerminalTwice(fmt.Sprintf("Enter new PIN for %s: ", name), fmt.Sprintf("Enter the new PIN for %s again: ", name))
	default:
		pin, err = prompt.Terminal(fmt.Sprintf("Enter PIN for %s: ", name))
	}
	switch {
	case errors.Is(err, prompt.ErrNoTerminal):
		return nil, fmt.Errorf("%s needs a PIN and there is no terminal to ask for it; pass --pin-file FILE", name)
	case errors.Is(err, prompt.ErrMismatch):
		return nil, errors.New("the two PINs differ; nothing was written")
	case err != nil:
		return nil, fmt.Errorf("read PIN: %w", err)
	}
	if confirm && len(pin) < minPINLen {
		secmem.Wipe(pin)
		return nil, fmt.Errorf("the PIN is too short: use at least %d characters", minPINLen)
	}
	if len(pin) > tpmseal.MaxPINSize {
		secmem.Wipe(pin)
		return nil, fmt.Errorf("the PIN is longer than %d bytes", tpmseal.MaxPINSize)
	}
	return pin, nil
}
