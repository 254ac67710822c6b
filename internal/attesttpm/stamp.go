package attesttpm

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/tpmdev"
)

// maxStampDigest bounds the digest a stamp carries (TPM2B_DATA).
const maxStampDigest = 64

// Stamp has the TPM sign digest (1 to 64 bytes) with this attestation key.
func (a *AK) Stamp(ctx context.Context, t TPM, digest []byte) (*attest.Stamp, error) {
	if len(digest) == 0 || len(digest) > maxStampDigest {
		return nil, fmt.Errorf("attesttpm: stamp: digest is %d bytes, want 1 to %d", len(digest), maxStampDigest)
	}
	var s *attest.Stamp
	err := t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		for attempt := 1; ; attempt++ {
			signer, err := a.loadedLocked(tpm, srk)
			if err != nil {
				return err
			}
			rsp, err := tpm2.Quote{
				SignHandle:     signer,
				QualifyingData: tpm2.TPM2BData{Buffer: digest},
				InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
				PCRSelect:      tpm2.TPMLPCRSelection{},
			}.Execute(tpm)
			if err != nil {
				if tpmdev.IsStaleHandle(err) && attempt < maxQuoteAttempts {
					continue
				}
				return a.akCommandError("TPM2_Quote", err)
			}
			s = &attest.Stamp{Attest: bytes.Clone(rsp.Quoted.Bytes()), Signature: tpm2.Marshal(rsp.Signature), AKPublic: bytes.Clone(a.public)}
			return nil
		}
	})
	if err != nil {
		return nil, fmt.Errorf("attesttpm: stamp: %w", err)
	}
	return s, nil
}
