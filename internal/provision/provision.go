package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"time"

	"filippo.io/age"

	"github.com/icn/icn-agent/internal/recovery"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// ErrSeedMismatch means a blob unsealed to a seed that is not the one of
// the identity's public key: the blob is damaged. It is recovery's, which
// checks backups and migrations the same way.
var ErrSeedMismatch = recovery.ErrSeedMismatch

// mismatchError is ErrSeedMismatch with the message the user reads.
type mismatchError struct{}

func (mismatchError) Error() string {
	return "the unsealed seed does not match the identity's public key: the blob is damaged; restore it from a backup"
}
func (mismatchError) Unwrap() error { return ErrSeedMismatch }

// Backup says where Create writes an encrypted backup of the new identity
// (a new file, never an existing one) and to whom (see recovery.Backup).
type Backup struct {
	Path       string
	Recipients []age.Recipient
}

// Create seals seed as the new identity opts.Name in store, or a new
// random seed if seed is nil, and returns its blob. With backup, the
// backup of the identity is written first; if the identity is then not
// stored, the backup is removed, and an error that leaves unclear whether
// the identity was stored says where the backup is kept.
//
// An existing identity is never replaced (the error wraps
// sealstore.ErrExists), and an existing backup file never overwritten (the
// error wraps recovery.ErrFileExists); errors writing the backup end in
// "nothing was written".
func Create(ctx context.Context, t tpmseal.TPM, store *sealstore.Store, seed []byte, opts tpmseal.SealOptions, backup *Backup) (*sealstore.Blob, error) {
	if seed == nil {
		buf, err := secmem.New(sealstore.SeedSize)
		if err != nil {
			return nil, err
		}
		defer buf.Destroy()
		if _, err := rand.Read(buf.Bytes()); err != nil {
			return nil, fmt.Errorf("generate seed: %w", err)
		}
		seed = buf.Bytes()
	}
	blob, err := tpmseal.Seal(ctx, t, seed, opts)
	if err != nil {
		return nil, err
	}
	if backup != nil {
		bk, err := recovery.NewBackup(opts.Name, opts.Comment, seed, time.Now())
		if err != nil {
			return nil, err
		}
		err = bk.WriteFile(backup.Path, backup.Recipients...)
		bk.Destroy()
		if err != nil {
			return nil, fmt.Errorf("%w; nothing was written", err)
		}
	}
	if err := store.Create(blob); err != nil {
		if backup == nil {
			return nil, err
		}
		_, lerr := store.Load(opts.Name)
		switch {
		case errors.Is(lerr, sealstore.ErrNotFound) || errors.Is(err, sealstore.ErrExists):
			// The identity was not created: its backup must not
			// outlive it as the only copy of an unused key.
			os.Remove(backup.Path)
			return nil, err
		case lerr == nil:
			return nil, fmt.Errorf("%w (the identity was created; its backup is %s)", err, backup.Path)
		default:
			return nil, fmt.Errorf("%w (whether the identity was created is unclear: %v; its backup is kept at %s)", err, lerr, backup.Path)
		}
	}
	return blob, nil
}

// Unseal unseals b with opts into locked memory, which the caller
// destroys, and checks that the seed is b's: a blob that unseals to
// another key gives an error wrapping ErrSeedMismatch. Unseal errors are
// tpmseal.UnsealWith's, as they are.
func Unseal(ctx context.Context, t tpmseal.TPM, b *sealstore.Blob, opts tpmseal.UnsealOptions) (*secmem.Buffer, error) {
	seed, err := recovery.UnsealChecked(ctx, t, b, opts)
	if errors.Is(err, ErrSeedMismatch) {
		return nil, mismatchError{}
	}
	return seed, err
}

// Policies returns the signed policies that may unseal b (for example
// those of the store that approve b's policy key); nil if b needs none.
type Policies func(b *sealstore.Blob) []*sealstore.SignedPolicy

// Reseal seals seed, the seed of the identity old (from Unseal), again
// with opts, and replaces old's blob in store with the new one once it,
// read back from the store, unseals with opts.PIN and policies to old's
// key. opts.Name must be old's (Change.SealOptions makes such options).
// It returns the new blob. Nothing is changed unless all succeeds:
// errors say so, and an error wraps sealstore.ErrResealPending if an
// earlier reseal of old is running or was interrupted.
//
// When sealing succeeded but the new blob was not stored, Reseal returns
// it with the error, so that the caller can explain an unseal failure of
// the new blob in terms of its policy.
func Reseal(ctx context.Context, t tpmseal.TPM, store *sealstore.Store, old *sealstore.Blob, seed []byte, opts tpmseal.SealOptions, policies Policies) (*sealstore.Blob, error) {
	if opts.Name != old.Name {
		return nil, fmt.Errorf("provision: reseal %s as %q: a reseal keeps the name; nothing was changed", old.Name, opts.Name)
	}
	if err := samePublicKey(seed, old.PublicKey); err != nil {
		return nil, fmt.Errorf("%s: %w; nothing was changed", old.Name, err)
	}
	blob, err := tpmseal.Seal(ctx, t, seed, opts)
	if err != nil {
		return nil, fmt.Errorf("%w; nothing was changed", err)
	}
	err = store.ReplaceChecked(blob, func(staged *sealstore.Blob) error {
		var ps []*sealstore.SignedPolicy
		if policies != nil {
			ps = policies(staged)
		}
		got, err := secmem.New(sealstore.SeedSize)
		if err != nil {
			return err
		}
		defer got.Destroy()
		if err := tpmseal.UnsealWith(ctx, t, staged, got.Bytes(), tpmseal.UnsealOptions{PIN: opts.PIN, Policies: ps}); err != nil {
			return fmt.Errorf("the resealed blob does not unseal, so nothing was changed: %w", err)
		}
		if err := samePublicKey(got.Bytes(), old.PublicKey); err != nil {
			return fmt.Errorf("the resealed blob unseals to another key (%w), so nothing was changed", err)
		}
		return nil
	})
	return blob, err
}

// samePublicKey checks that seed is the seed of pub.
func samePublicKey(seed []byte, pub interface{ Marshal() []byte }) error {
	got, err := sealstore.PublicKey(seed)
	if err != nil {
		return err
	}
	if !bytes.Equal(got.Marshal(), pub.Marshal()) {
		return mismatchError{}
	}
	return nil
}

// Change says what a reseal changes. Everything else is kept: the key, the
// name and comment, the PCR selection and the kind of policy (fixed
// values, or the same signing key). A reseal always binds to the PCRs'
// current values, or to policies signed for them.
type Change struct {
	// PCRs, if not nil, is the new PCR selection.
	PCRs []int
	// Signer, if not nil, binds the identity to policies signed by this
	// key from now on.
	Signer *sealstore.PolicyKey
}

// SealOptions returns the options to reseal old with ch (the PIN is the
// caller's to set), and the policy key the new blob is bound to, nil for
// fixed PCR values.
func (ch Change) SealOptions(old *sealstore.Blob) (tpmseal.SealOptions, *sealstore.PolicyKey, error) {
	opts := tpmseal.SealOptions{Name: old.Name, Comment: old.Comment, PCRs: old.Policy.Indexes()}
	if ch.PCRs != nil {
		opts.PCRs = ch.PCRs
	}
	signer := ch.Signer
	if signer == nil && old.Policy.Kind == sealstore.PolicyAuthorizedPCR {
		var err error
		if signer, err = old.Policy.SignerKey(); err != nil {
			return opts, nil, err
		}
	}
	if signer != nil {
		opts.Signer = signer.Public
	}
	return opts, signer, nil
}

// UnsealOptions returns what tpmseal.UnsealWith needs to unseal b:
// policies (the signed policies that may approve b's PCR values) and, for
// a PIN-protected identity, the PIN from pin. pin is called only after
// tpmseal.CheckPolicy found b's policy satisfiable now, so that a PIN
// is never spent (nor asked for) on an unseal that cannot work; its
// errors, and CheckPolicy's, are returned as they are. The caller wipes
// the returned options' PIN.
func UnsealOptions(ctx context.Context, t tpmseal.TPM, b *sealstore.Blob, policies []*sealstore.SignedPolicy, pin func() ([]byte, error)) (tpmseal.UnsealOptions, error) {
	opts := tpmseal.UnsealOptions{Policies: policies}
	if !b.Policy.PIN {
		return opts, nil
	}
	if err := tpmseal.CheckPolicy(ctx, t, b, policies); err != nil {
		return opts, err
	}
	p, err := pin()
	if err != nil {
		return opts, err
	}
	opts.PIN = p
	return opts, nil
}
