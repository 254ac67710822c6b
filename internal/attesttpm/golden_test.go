package attesttpm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

var updateGolden = flag.Bool("update-golden", false, "regenerate the version 2 golden evidence in the top-level testdata/evidence with the simulator; then run go test ./attest -run TestGoldenEvidenceKinds -update for the fuzz seeds")

// goldenKinds are attest's version 2 golden vectors: evidence the
// simulator made about an identity of each policy kind, with the files a
// verifier needs (testdata/evidence/v2-KIND.{json,nonce,ak-name,pub} at
// the top of the module). attest's
// tests verify them offline.
var goldenKinds = []struct {
	kind   string
	policy attest.PolicyKind
	pin    bool
}{
	{"pcr", attest.PolicyPCR, false},
	{"pcr-pin", attest.PolicyPCR, true},
	{"signed", attest.PolicyAuthorizedPCR, false},
	{"signed-pin", attest.PolicyAuthorizedPCR, true},
}

func goldenKindPath(kind, ext string) string {
	return "../../testdata/evidence/v2-" + kind + "." + ext
}

// TestGoldenEvidenceKinds regenerates the golden vectors with
// -update-golden (Quote verifies each before returning it).
func TestGoldenEvidenceKinds(t *testing.T) {
	if !*updateGolden {
		t.Skip("regenerates attest's golden evidence only with -update-golden")
	}
	regenerateGoldenKinds(t)
}

func marshalIndent(t testing.TB, e *attest.Evidence) []byte {
	t.Helper()
	js, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, js, "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// approvalOf returns a signed policy of key over values of PCRs 0 and 7 as
// an Approval.
func approvalOf(t *testing.T, key *ecdsa.PrivateKey, v0, v7 []byte) Approval {
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
	return Approval{Digest: p.Digest, Signature: sig}
}

// regenerateGoldenKinds makes the version 2 golden vectors with the
// simulator.
func regenerateGoldenKinds(t *testing.T) {
	f := newFixture(t, "sim")
	ctx := context.Background()
	f.extend(7)
	f.extend(10)
	ak := f.ak("")
	policyKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	values := f.readPCRs([]int{0, 7})
	for _, gk := range goldenKinds {
		seed := make([]byte, sealstore.SeedSize)
		rand.Read(seed)
		opts := tpmseal.SealOptions{Name: "golden-" + gk.kind, PCRs: []int{0, 7}}
		if gk.pin {
			opts.PIN = []byte("golden pin")
		}
		if gk.policy == attest.PolicyAuthorizedPCR {
			opts.Signer = &policyKey.PublicKey
		}
		b, err := tpmseal.Seal(ctx, f.tpm, seed, opts)
		if err != nil {
			t.Fatal(err)
		}
		s := Subject{PublicKey: b.PublicKey, SealedPublic: b.Public, SealedPrivate: b.Private, PCRs: b.Policy.Indexes(),
			Policy: SubjectPolicy{Kind: gk.policy, PIN: gk.pin}}
		if gk.policy == attest.PolicyAuthorizedPCR {
			s.Policy.Signer = b.Policy.Signer
			s.Policy.Approvals = []Approval{approvalOf(t, policyKey, values[0], values[7])}
		}
		nonce := newNonce(t)
		e, err := ak.Quote(ctx, f.tpm, s, QuoteRequest{Nonce: nonce, ExtraPCRs: []int{10}, Sign: seedSigner(seed)})
		if err != nil {
			t.Fatal(err)
		}
		for path, data := range map[string][]byte{
			goldenKindPath(gk.kind, "json"):    marshalIndent(t, e),
			goldenKindPath(gk.kind, "nonce"):   []byte(hex.EncodeToString(nonce) + "\n"),
			goldenKindPath(gk.kind, "ak-name"): []byte(hex.EncodeToString(ak.Name()) + "\n"),
			goldenKindPath(gk.kind, "pub"):     ssh.MarshalAuthorizedKey(b.PublicKey),
		} {
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
