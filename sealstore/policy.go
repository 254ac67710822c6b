package sealstore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// maxPCRs is the number of PCRs a policy can select: PCR 0 to 23, the
// minimum a PC Client TPM implements and what a 3-byte selection bitmap can
// express.
const maxPCRs = tpmdev.NumPCRs

// PolicyPCRDigest returns the policy digest a TPM computes for
// TPM2_PolicyPCR over the given PCRs of the given bank, starting from an
// empty policy, in a SHA-256 policy session (the sealed object's nameAlg):
//
//	SHA256(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || SHA256(values in index order))
//
// where TPM_CC_PolicyPCR is the uint32 0x0000017F and TPML_PCR_SELECTION is
// the marshalled [PCRSelection] of the bank and the indexes. This is the
// authPolicy of an object sealed to these PCR values.
//
// pcrs must be non-empty, sorted by strictly increasing Index in 0..23, and
// each Value must be exactly the bank's digest size. bank must be a hash
// algorithm the TPM library knows (SHA-1, SHA-256, SHA-384, SHA-512); the
// blob format further restricts it to SHA-256.
func PolicyPCRDigest(bank tpm2.TPMIAlgHash, pcrs []PCRValue) ([]byte, error) {
	h, err := bank.Hash()
	if err != nil {
		return nil, fmt.Errorf("sealstore: policy pcr: unsupported pcr bank 0x%04x", uint16(bank))
	}
	if len(pcrs) == 0 || len(pcrs) > maxPCRs {
		return nil, fmt.Errorf("sealstore: policy pcr: want 1 to %d pcrs, got %d", maxPCRs, len(pcrs))
	}
	values := sha256.New()
	indexes := make([]int, len(pcrs))
	for i, p := range pcrs {
		if p.Index < 0 || p.Index >= maxPCRs {
			return nil, fmt.Errorf("sealstore: policy pcr: pcr index %d out of range 0 to %d", p.Index, maxPCRs-1)
		}
		if i > 0 && p.Index <= pcrs[i-1].Index {
			return nil, fmt.Errorf("sealstore: policy pcr: pcr index %d after %d: indexes must be strictly increasing", p.Index, pcrs[i-1].Index)
		}
		if len(p.Value) != h.Size() {
			return nil, fmt.Errorf("sealstore: policy pcr: pcr %d value: want %d bytes, got %d", p.Index, h.Size(), len(p.Value))
		}
		values.Write(p.Value)
		indexes[i] = p.Index
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, fmt.Errorf("sealstore: policy pcr: %w", err)
	}
	// The PCR digest is hashed raw (a []byte marshals without a size), as
	// TPM2_PolicyPCR extends the policy with the digest itself, not a
	// TPM2B_DIGEST.
	if err := calc.Update(tpm2.TPMCCPolicyPCR, tpmdev.Selection(bank, indexes), values.Sum(nil)); err != nil {
		return nil, fmt.Errorf("sealstore: policy pcr: %w", err)
	}
	return calc.Hash().Digest, nil
}

// PolicyDigest returns the authPolicy of an object sealed to p, as a TPM
// computes it in a SHA-256 policy session, from the empty policy:
//
//   - PolicyPCR: TPM2_PolicyPCR over the listed values (PolicyPCRDigest);
//   - PolicyAuthorizedPCR: TPM2_PolicyAuthorize with keySign the Name of
//     p.Signer and an empty policyRef (PolicyAuthorizeDigest);
//
// followed, if p.PIN is set, by TPM2_PolicyAuthValue:
//
//	SHA256(digest || TPM_CC_PolicyAuthValue)
//
// with TPM_CC_PolicyAuthValue the uint32 0x0000016B. p.Digest is ignored.
func PolicyDigest(p Policy) ([]byte, error) {
	var d []byte
	var err error
	switch p.Kind {
	case PolicyPCR:
		d, err = PolicyPCRDigest(p.Bank, p.PCRs)
	case PolicyAuthorizedPCR:
		var k *PolicyKey
		if k, err = parsePolicyKeyPublic(p.Signer); err == nil {
			d, err = PolicyAuthorizeDigest(k.Name)
		}
	default:
		err = fmt.Errorf("sealstore: policy kind %d is not supported", p.Kind)
	}
	if err != nil {
		return nil, err
	}
	if p.PIN {
		d = policyAuthValueDigest(d)
	}
	return d, nil
}

// PolicyAuthorizeDigest returns the policy digest a TPM computes for
// TPM2_PolicyAuthorize from the empty policy, with keySign the TPM Name
// keyName (see PolicyKey) and an empty policyRef, in a SHA-256 session:
//
//	SHA256(SHA256(0^32 || TPM_CC_PolicyAuthorize || keyName) || policyRef)
//
// where TPM_CC_PolicyAuthorize is the uint32 0x0000016A. TPM2_PolicyAuthorize
// replaces whatever digest the session had, once a signature by that key
// over that digest is verified: the object's authPolicy then depends only
// on the key.
func PolicyAuthorizeDigest(keyName []byte) ([]byte, error) {
	if len(keyName) != srkNameSize {
		return nil, fmt.Errorf("sealstore: policy authorize: key name is %d bytes, want %d", len(keyName), srkNameSize)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, fmt.Errorf("sealstore: policy authorize: %w", err)
	}
	cmd := tpm2.PolicyAuthorize{KeySign: tpm2.TPM2BName{Buffer: keyName}}
	if err := cmd.Update(calc); err != nil {
		return nil, fmt.Errorf("sealstore: policy authorize: %w", err)
	}
	return calc.Hash().Digest, nil
}

// policyAuthValueDigest extends a SHA-256 policy digest with
// TPM2_PolicyAuthValue.
func policyAuthValueDigest(prev []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	var cc [4]byte
	binary.BigEndian.PutUint32(cc[:], uint32(tpm2.TPMCCPolicyAuthValue))
	h.Write(cc[:])
	return h.Sum(nil)
}
