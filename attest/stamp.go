package attest

import (
	"crypto/subtle"
	"errors"
	"fmt"
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
