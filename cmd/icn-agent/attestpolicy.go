package main

import (
	"bytes"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/attesttpm"
	"github.com/icn/icn-agent/sealstore"
)

// subjectPolicy describes b's policy for attestation evidence: its kind,
// whether it has a PIN, and for a signed PCR policy the key and the
// approvals among entries (the store's signed policies) made by that key,
// so that the evidence can carry the one for the quoted values.
func subjectPolicy(b *sealstore.Blob, entries []sealstore.PolicyEntry) attesttpm.SubjectPolicy {
	sp := attesttpm.SubjectPolicy{PIN: b.Policy.PIN}
	switch b.Policy.Kind {
	case sealstore.PolicyPCR:
		sp.Kind = attest.PolicyPCR
	case sealstore.PolicyAuthorizedPCR:
		sp.Kind = attest.PolicyAuthorizedPCR
		sp.Signer = b.Policy.Signer
		key, err := b.Policy.SignerKey()
		if err != nil {
			return sp // the evidence then shows no approval
		}
		for _, pe := range entries {
			p := pe.Policy
			if pe.Err != nil || p == nil || p.Key == nil || !bytes.Equal(p.Key.Name, key.Name) {
				continue
			}
			sp.Approvals = append(sp.Approvals, attesttpm.Approval{
				Digest: p.Digest,
				Signature: tpm2.Marshal(tpm2.TPMTSignature{
					SigAlg: tpm2.TPMAlgECDSA,
					Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
						Hash:       tpm2.TPMAlgSHA256,
						SignatureR: tpm2.TPM2BECCParameter{Buffer: p.R},
						SignatureS: tpm2.TPM2BECCParameter{Buffer: p.S},
					}),
				}),
			})
		}
	}
	return sp
}

// policyDescription names an identity's policy kind for people.
func policyDescription(kind attest.PolicyKind, pin bool) string {
	var s string
	switch kind {
	case attest.PolicyAuthorizedPCR:
		s = "signed PCR policy"
	default:
		s = "PCR policy"
	}
	if pin {
		s += " with PIN"
	}
	return s
}
