// Package tpmpolicy computes the policy digests of the sealed objects
// icn-agent makes, as a TPM computes them in a SHA-256 policy session. It is
// the one place this arithmetic lives: sealing (sealstore) uses it to set a
// sealed object's authPolicy, and verifying (attest) uses it to decide
// whether a certified authPolicy is what an identity's policy says and
// whether the quoted PCR values satisfy it. It is pure Go and needs no TPM.
//
// A policy digest starts as 32 zero bytes and each policy command extends
// it (TPM 2.0 Part 3, section 23):
//
//	TPM2_PolicyPCR:       d = SHA256(d || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || SHA256(values in index order))
//	TPM2_PolicyAuthorize: d = SHA256(SHA256(0^32 || TPM_CC_PolicyAuthorize || keyName) || policyRef)
//	TPM2_PolicyAuthValue: d = SHA256(d || TPM_CC_PolicyAuthValue)
//
// with command codes as big-endian uint32s. PolicyAuthorize replaces the
// digest: an object whose authPolicy starts with it depends only on the
// key, which approves PolicyPCR digests by signing [ApprovalHash] of them.
package tpmpolicy

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// NumPCRs is the number of PCRs a selection can name: 0 to 23, what a PC
// Client TPM implements and a 3-byte bitmap expresses.
const NumPCRs = 24

// Selection returns the TPML_PCR_SELECTION of indexes in one bank, with a
// 3-byte bitmap. Indexes outside 0..23 are ignored.
func Selection(bank tpm2.TPMIAlgHash, indexes []int) tpm2.TPMLPCRSelection {
	bitmap := make([]byte, 3)
	for _, i := range indexes {
		if i >= 0 && i < NumPCRs {
			bitmap[i/8] |= 1 << (i % 8)
		}
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: bank, PCRSelect: bitmap}}}
}

// PCR returns the digest of TPM2_PolicyPCR, from the empty policy, over the
// PCRs indexes of bank holding values. indexes must be non-empty, strictly
// ascending in 0..23, with one value of the bank's digest size each.
func PCR(bank tpm2.TPMIAlgHash, indexes []int, values [][]byte) ([]byte, error) {
	h, err := bank.Hash()
	if err != nil {
		return nil, fmt.Errorf("unsupported pcr bank 0x%04x", uint16(bank))
	}
	if len(indexes) == 0 || len(indexes) > NumPCRs {
		return nil, fmt.Errorf("want 1 to %d pcrs, got %d", NumPCRs, len(indexes))
	}
	if len(values) != len(indexes) {
		return nil, fmt.Errorf("%d values for %d pcrs", len(values), len(indexes))
	}
	digest := sha256.New()
	for i, idx := range indexes {
		if idx < 0 || idx >= NumPCRs {
			return nil, fmt.Errorf("pcr index %d out of range 0 to %d", idx, NumPCRs-1)
		}
		if i > 0 && idx <= indexes[i-1] {
			return nil, fmt.Errorf("pcr index %d after %d: indexes must be strictly increasing", idx, indexes[i-1])
		}
		if len(values[i]) != h.Size() {
			return nil, fmt.Errorf("pcr %d value: want %d bytes, got %d", idx, h.Size(), len(values[i]))
		}
		digest.Write(values[i])
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	// The values' digest is hashed raw (a []byte marshals without a size):
	// TPM2_PolicyPCR extends the policy with the digest itself, not a
	// TPM2B_DIGEST.
	if err := calc.Update(tpm2.TPMCCPolicyPCR, Selection(bank, indexes), digest.Sum(nil)); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// KeyNameSize is the size of a SHA-256 TPM Name: the algorithm ID and the
// digest.
const KeyNameSize = 2 + sha256.Size

// Authorize returns the digest of TPM2_PolicyAuthorize, from the empty
// policy, with keySign the TPM Name keyName and an empty policyRef.
func Authorize(keyName []byte) ([]byte, error) {
	if len(keyName) != KeyNameSize {
		return nil, fmt.Errorf("key name is %d bytes, want %d", len(keyName), KeyNameSize)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyAuthorize{KeySign: tpm2.TPM2BName{Buffer: keyName}}).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// AuthValue extends a SHA-256 policy digest with TPM2_PolicyAuthValue.
func AuthValue(prev []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMCCPolicyAuthValue)))
	return h.Sum(nil)
}

// ApprovalHash returns aHash, what a policy key signs and TPM2_PolicyAuthorize
// checks: SHA256(approvedPolicy || policyRef) with an empty policyRef.
func ApprovalHash(approved []byte) []byte {
	h := sha256.Sum256(approved)
	return h[:]
}

// ErrUnknownKind is returned by [Sealed] for a policy kind it does not know.
var ErrUnknownKind = errors.New("unknown policy kind")

// Kind is the shape of a sealed object's policy.
type Kind uint8

// The policy kinds icn-agent seals with.
const (
	// KindPCR is TPM2_PolicyPCR over values fixed at seal time.
	KindPCR Kind = 1
	// KindAuthorizedPCR is TPM2_PolicyAuthorize by a policy key, which
	// approves PolicyPCR digests by signing them.
	KindAuthorizedPCR Kind = 2
)

// Sealed returns the authPolicy of a sealed object: for KindPCR the
// PolicyPCR digest pcrDigest, for KindAuthorizedPCR the PolicyAuthorize
// digest of keyName; then, with pin, extended by TPM2_PolicyAuthValue.
func Sealed(kind Kind, pcrDigest, keyName []byte, pin bool) ([]byte, error) {
	var d []byte
	switch kind {
	case KindPCR:
		if len(pcrDigest) != sha256.Size {
			return nil, fmt.Errorf("pcr policy digest is %d bytes, want %d", len(pcrDigest), sha256.Size)
		}
		d = pcrDigest
	case KindAuthorizedPCR:
		var err error
		if d, err = Authorize(keyName); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w %d", ErrUnknownKind, kind)
	}
	if pin {
		d = AuthValue(d)
	}
	return d, nil
}
