package attest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// Stamp is the TPM's signed statement that it saw a digest at a point of
// its clock: a TPM2_Quote by the attestation key, of no PCR, whose
// qualifyingData is the digest. A log can be anchored with stamps of its
// head: only the TPM can make them, and each names the TPM's clock, reset
// and restart counts, which only move forward.
type Stamp struct {
	// Attest is the TPMS_ATTEST the TPM signed.
	Attest []byte `json:"attest"`
	// Signature is the AK's TPMT_SIGNATURE over Attest.
	Signature []byte `json:"signature"`
	// AKPublic is the AK's marshalled TPM2B_PUBLIC.
	AKPublic []byte `json:"ak_public"`
}

// StampInfo is what a verified stamp says.
type StampInfo struct {
	// AKName is the Name of the attestation key that signed it.
	AKName []byte
	// Clock is the TPM's clock in milliseconds, and ResetCount and
	// RestartCount its boot counters, when it signed.
	Clock                    uint64
	ResetCount, RestartCount uint32
}

// ErrBadStamp means a stamp does not verify: see the wrapped detail.
var ErrBadStamp = errors.New("attest: the TPM stamp does not verify")

// maxStampDigest bounds the digest a stamp carries (TPM2B_DATA).
const maxStampDigest = 64

// Stamp has the TPM sign digest (1 to 64 bytes) with this attestation key.
func (a *AK) Stamp(ctx context.Context, t TPM, digest []byte) (*Stamp, error) {
	if len(digest) == 0 || len(digest) > maxStampDigest {
		return nil, fmt.Errorf("attest: stamp: digest is %d bytes, want 1 to %d", len(digest), maxStampDigest)
	}
	var s *Stamp
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
			s = &Stamp{Attest: bytes.Clone(rsp.Quoted.Bytes()), Signature: tpm2.Marshal(rsp.Signature), AKPublic: bytes.Clone(a.public)}
			return nil
		}
	})
	if err != nil {
		return nil, fmt.Errorf("attest: stamp: %w", err)
	}
	return s, nil
}

// VerifyStamp checks that s is a stamp of digest by an icn-agent attestation
// key, the one named trustedAKName if that is not nil: the key's template,
// its signature, the magic, the type (a quote) and the qualifyingData,
// compared in constant time. Errors wrap ErrBadStamp, or ErrUntrustedAK.
func VerifyStamp(s *Stamp, digest, trustedAKName []byte) (*StampInfo, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: no stamp", ErrBadStamp)
	}
	key, name, err := parseAKPublic(s.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadStamp, err)
	}
	if trustedAKName != nil && subtle.ConstantTimeCompare(trustedAKName, name) != 1 {
		return nil, fmt.Errorf("%w: signed by the attestation key named %x, want %x", ErrUntrustedAK, name, trustedAKName)
	}
	if err := verifyECDSA(key, s.Attest, s.Signature); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStamp, err)
	}
	if err := attestHeader(s.Attest, stAttestQuote); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadStamp, err)
	}
	a, err := parseAttest(s.Attest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadStamp, err)
	}
	if subtle.ConstantTimeCompare(a.ExtraData.Buffer, digest) != 1 {
		return nil, fmt.Errorf("%w: it is of another digest", ErrBadStamp)
	}
	return &StampInfo{AKName: name, Clock: a.ClockInfo.Clock, ResetCount: a.ClockInfo.ResetCount, RestartCount: a.ClockInfo.RestartCount}, nil
}
