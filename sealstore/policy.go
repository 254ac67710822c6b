package sealstore

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/internal/tpmpolicy"
)

// maxPCRs is the number of PCRs a policy can select: PCR 0 to 23, the
// minimum a PC Client TPM implements and what a 3-byte selection bitmap can
// express.
const maxPCRs = tpmpolicy.NumPCRs

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
	indexes := make([]int, len(pcrs))
	values := make([][]byte, len(pcrs))
	for i, p := range pcrs {
		indexes[i], values[i] = p.Index, p.Value
	}
	d, err := tpmpolicy.PCR(bank, indexes, values)
	if err != nil {
		return nil, fmt.Errorf("sealstore: policy pcr: %w", err)
	}
	return d, nil
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
	var pcrDigest, keyName []byte
	switch p.Kind {
	case PolicyPCR:
		d, err := PolicyPCRDigest(p.Bank, p.PCRs)
		if err != nil {
			return nil, err
		}
		pcrDigest = d
	case PolicyAuthorizedPCR:
		k, err := parsePolicyKeyPublic(p.Signer)
		if err != nil {
			return nil, err
		}
		keyName = k.Name
	default:
		return nil, fmt.Errorf("sealstore: policy kind %d is not supported", p.Kind)
	}
	d, err := tpmpolicy.Sealed(tpmpolicy.Kind(p.Kind), pcrDigest, keyName, p.PIN)
	if err != nil {
		return nil, fmt.Errorf("sealstore: policy: %w", err)
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
	d, err := tpmpolicy.Authorize(keyName)
	if err != nil {
		return nil, fmt.Errorf("sealstore: policy authorize: %w", err)
	}
	return d, nil
}
