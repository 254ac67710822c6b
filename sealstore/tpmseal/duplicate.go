package tpmseal

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// ReadSRK returns the public half of t's storage root key.
func ReadSRK(ctx context.Context, t TPM) (*sealstore.SRKPublic, error) {
	var out *sealstore.SRKPublic
	err := t.RunWithSRK(ctx, func(_ transport.TPM, srk *tpmdev.SRK) error {
		var err error
		out, err = sealstore.NewSRKPublic(srk.Public)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sealstore: read storage root key: %w", err)
	}
	return out, nil
}

// UnsealDuplicate imports d under t's storage root key, loads it, unseals
// it into dst and flushes it; the imported object is never kept. dst must
// be exactly as long as the wrapped data (callers pass locked memory). The
// data crosses back from the TPM encrypted (a policy session salted to the
// SRK, with response encryption) and is decrypted in dst: it is in clear
// nowhere else (the session is run by hand, see unseal_session.go).
//
// If d was wrapped for another SRK the error wraps sealstore.ErrNotForThisTPM and
// the TPM is not asked. If the TPM refuses the import (d altered, or its
// parent Name altered to match this TPM), the error wraps
// sealstore.ErrDuplicateRejected and the TPM's response code.
func UnsealDuplicate(ctx context.Context, t TPM, d *sealstore.Duplicate, dst []byte) error {
	pub, priv, seed, err := d.Parts()
	if err != nil {
		return err
	}
	if len(dst) == 0 || len(dst) > sealstore.MaxDuplicateData {
		return fmt.Errorf("sealstore: unwrap buffer is %d bytes, want 1 to %d", len(dst), sealstore.MaxDuplicateData)
	}
	err = t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		if !bytes.Equal(srk.Name.Buffer, d.ParentName) {
			return fmt.Errorf("%w: wrapped for SRK %x, this TPM's SRK is %x", sealstore.ErrNotForThisTPM, d.ParentName, srk.Name.Buffer)
		}
		imp, err := tpm2.Import{
			ParentHandle: srk.AuthHandle(),
			ObjectPublic: pub,
			Duplicate:    priv,
			InSymSeed:    seed,
			Symmetric:    tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(tpm)
		if err != nil {
			if errors.Is(err, tpm2.TPMRCIntegrity) {
				return fmt.Errorf("%w: %w", sealstore.ErrDuplicateRejected, err)
			}
			return fmt.Errorf("import wrapped object: %w", err)
		}
		load, err := tpm2.Load{
			ParentHandle: srk.AuthHandle(),
			InPrivate:    imp.OutPrivate,
			InPublic:     pub,
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("load imported object: %w", err)
		}
		defer tpm2.FlushContext{FlushHandle: load.ObjectHandle}.Execute(tpm)
		return unsealDuplicateLocked(tpm, srk, tpm2.NamedHandle{Handle: load.ObjectHandle, Name: load.Name}, dst)
	})
	if err != nil {
		return fmt.Errorf("sealstore: unwrap: %w", err)
	}
	return nil
}

// unsealDuplicateLocked satisfies the wrapped object's policy,
// PolicyCommandCode(Unseal), in a one-off policy session salted to the SRK
// and unseals with the response encrypted, decrypting it in dst only: the
// session is run by hand, as UnsealWith's (unseal_session.go).
func unsealDuplicateLocked(tpm transport.TPM, srk *tpmdev.SRK, obj tpm2.NamedHandle, dst []byte) error {
	err := unsealInSession(tpm, srk, nil, func(h tpm2.TPMISHPolicy) error {
		_, err := tpm2.PolicyCommandCode{PolicySession: h, Code: tpm2.TPMCCUnseal}.Execute(tpm)
		return err
	}, obj.Handle, obj.Name, dst)
	if err != nil {
		return fmt.Errorf("unseal imported object: %w", err)
	}
	return nil
}
