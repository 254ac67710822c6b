package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/internal/tpmpolicy"
	"github.com/icn/icn-agent/sealstore"
)

// approval is a signed PolicyPCR digest, as the agent holds one.
type approval struct{ Digest, Signature []byte }

// approvalOf returns a signed policy of key over values of PCRs 0 and 7 as
// an approval.
func approvalOf(t *testing.T, key *ecdsa.PrivateKey, v0, v7 []byte) approval {
	t.Helper()
	p, err := sealstore.SignPolicy(key, []sealstore.PCRValue{{Index: 0, Value: v0}, {Index: 7, Value: v7}}, "", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	sig := tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: p.R},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: p.S},
		}),
	})
	return approval{Digest: p.Digest, Signature: sig}
}

// TestVerifyPolicyKinds checks Result.SealedPolicyMatches for every kind of
// policy icn-agent seals with, against authPolicy values computed as
// sealstore computes them, and that a wrong description can only make it
// false.
func TestVerifyPolicyKinds(t *testing.T) {
	f := newForger(t)
	keyA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pkA, err := sealstore.NewPolicyKey(&keyA.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pkB, _ := sealstore.NewPolicyKey(&keyB.PublicKey)
	signerA, signerB := pkA.PolicyKeyPublic(), pkB.PolicyKeyPublic()
	current := approvalOf(t, keyA, f.values[0], f.values[1])
	other := make([]byte, 32)
	stale := approvalOf(t, keyA, f.values[0], other)
	byB := approvalOf(t, keyB, f.values[0], f.values[1])

	pcrDigest, err := tpmpolicy.PCR(tpm2.TPMAlgSHA256, []int{0, 7}, f.values[:2])
	if err != nil {
		t.Fatal(err)
	}
	// The authPolicy values sealstore gives each kind of identity.
	authPolicy := func(kind sealstore.PolicyKind, pin bool) []byte {
		p := sealstore.Policy{Kind: kind, PIN: pin, Bank: tpm2.TPMAlgSHA256}
		if kind == sealstore.PolicyPCR {
			p.PCRs = []sealstore.PCRValue{{Index: 0, Value: f.values[0]}, {Index: 7, Value: f.values[1]}}
		} else {
			p.Signer = signerA
		}
		d, err := sealstore.PolicyDigest(p)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	pcrPIN := authPolicy(sealstore.PolicyPCR, true)
	if got := tpmpolicy.AuthValue(pcrDigest); string(got) != string(pcrPIN) {
		t.Fatal("sealstore's PCR+PIN policy is not PolicyPCR then PolicyAuthValue")
	}
	signed := authPolicy(sealstore.PolicyAuthorizedPCR, false)
	signedPIN := authPolicy(sealstore.PolicyAuthorizedPCR, true)

	describe := func(kind PolicyKind, pin bool, signer []byte, a *approval) func(*Evidence) {
		return func(e *Evidence) {
			e.PolicyKind, e.PolicyPIN, e.PolicySigner = kind, pin, signer
			if a != nil {
				e.ApprovedPolicy, e.Approval = a.Digest, a.Signature
			}
		}
	}
	tests := []struct {
		name   string
		policy []byte
		desc   func(*Evidence)
		want   bool
	}{
		{"pcr", pcrDigest, describe(PolicyPCR, false, nil, nil), true},
		{"pcr described with a pin", pcrDigest, describe(PolicyPCR, true, nil, nil), false},
		{"pcr+pin", pcrPIN, describe(PolicyPCR, true, nil, nil), true},
		{"pcr+pin described without", pcrPIN, describe(PolicyPCR, false, nil, nil), false},
		{"signed", signed, describe(PolicyAuthorizedPCR, false, signerA, &current), true},
		{"signed+pin", signedPIN, describe(PolicyAuthorizedPCR, true, signerA, &current), true},
		{"signed+pin described without", signedPIN, describe(PolicyAuthorizedPCR, false, signerA, &current), false},
		{"signed, values not approved", signed, describe(PolicyAuthorizedPCR, false, signerA, nil), false},
		{"signed, approval of other values", signed, describe(PolicyAuthorizedPCR, false, signerA, &stale), false},
		{"signed, approval by another key", signed, describe(PolicyAuthorizedPCR, false, signerA, &byB), false},
		{"signed, described with another key", signed, describe(PolicyAuthorizedPCR, false, signerB, &byB), false},
		{"signed described as pcr", signed, describe(PolicyPCR, false, nil, nil), false},
		{"pcr described as signed", pcrDigest, describe(PolicyAuthorizedPCR, false, signerA, &current), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := f.evidence(forgery{
				sealed:   func(p *tpm2.TPMTPublic) { p.AuthPolicy = tpm2.TPM2BDigest{Buffer: tt.policy} },
				evidence: tt.desc,
			})
			// Through both encodings, as a verifier receives it.
			parsed, err := ParseSSH(e.MarshalSSH())
			if err != nil {
				t.Fatal(err)
			}
			res, err := Verify(parsed, VerifyOptions{Nonce: f.nonce})
			if err != nil {
				t.Fatal(err)
			}
			if res.SealedPolicyMatches != tt.want {
				t.Errorf("SealedPolicyMatches = %v, want %v", res.SealedPolicyMatches, tt.want)
			}
			if res.SealedPolicyKind != parsed.PolicyKind || res.SealedPIN != parsed.PolicyPIN {
				t.Errorf("result describes %v pin=%v, evidence %v pin=%v", res.SealedPolicyKind, res.SealedPIN, parsed.PolicyKind, parsed.PolicyPIN)
			}
			j, err := parsed.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			var back Evidence
			if err := back.UnmarshalJSON(j); err != nil {
				t.Fatal(err)
			}
			if string(back.MarshalSSH()) != string(parsed.MarshalSSH()) {
				t.Error("JSON round trip changed the evidence")
			}
		})
	}
}

// TestEvidenceV1StillVerifies: version 1 evidence (no policy description)
// parses, re-encodes byte for byte, and is checked as a PolicyPCR policy.
func TestEvidenceV1StillVerifies(t *testing.T) {
	f := newForger(t)
	e := f.evidence(forgery{evidence: func(e *Evidence) { e.Version, e.PolicyKind = 1, PolicyUnknown }})
	b := e.MarshalSSH()
	parsed, err := ParseSSH(b)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Version != 1 || string(parsed.MarshalSSH()) != string(b) {
		t.Fatalf("version 1 did not round-trip: version %d", parsed.Version)
	}
	res, err := Verify(parsed, VerifyOptions{Nonce: f.nonce})
	if err != nil {
		t.Fatal(err)
	}
	if !res.SealedPolicyMatches || res.SealedPolicyKind != PolicyUnknown {
		t.Errorf("result %+v", res)
	}
	// Version 1 evidence cannot carry a description.
	parsed.PolicyKind = PolicyPCR
	if _, err := Verify(parsed, VerifyOptions{Nonce: f.nonce}); !errors.Is(err, ErrMalformed) {
		t.Errorf("version 1 evidence with a policy kind: %v", err)
	}
}
