package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/sealstore"
)

// goldenKinds are the version 2 golden vectors: evidence the simulator made
// about an identity of each policy kind, with the files a verifier needs
// (testdata/evidence-v2-KIND.{json,nonce,ak-name,pub}). The version 1
// vector (evidence-v1.*) is kept as it was made, for compatibility.
var goldenKinds = []struct {
	kind   string
	policy PolicyKind
	pin    bool
}{
	{"pcr", PolicyPCR, false},
	{"pcr-pin", PolicyPCR, true},
	{"signed", PolicyAuthorizedPCR, false},
	{"signed-pin", PolicyAuthorizedPCR, true},
}

func goldenKindPath(kind, ext string) string { return "testdata/evidence-v2-" + kind + "." + ext }

// TestGoldenEvidenceKinds verifies the golden evidence of every policy kind
// offline: it verifies, pinned to its AK, and its policy matches.
func TestGoldenEvidenceKinds(t *testing.T) {
	if *update {
		regenerateGoldenKinds(t)
	}
	for _, gk := range goldenKinds {
		t.Run(gk.kind, func(t *testing.T) {
			js, err := os.ReadFile(goldenKindPath(gk.kind, "json"))
			if err != nil {
				t.Fatal(err)
			}
			var e Evidence
			if err := json.Unmarshal(js, &e); err != nil {
				t.Fatal(err)
			}
			pub, err := os.ReadFile(goldenKindPath(gk.kind, "pub"))
			if err != nil {
				t.Fatal(err)
			}
			id, _, _, _, err := ssh.ParseAuthorizedKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			opts := VerifyOptions{
				Nonce:         readHexFile(t, goldenKindPath(gk.kind, "nonce")),
				TrustedAKName: readHexFile(t, goldenKindPath(gk.kind, "ak-name")),
				IdentityKey:   id,
			}
			res, err := Verify(&e, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !res.AKPinned || !res.Certified || !res.SealedPolicyMatches || res.SealedPolicyKind != gk.policy || res.SealedPIN != gk.pin {
				t.Fatalf("result %+v: want pinned, certified, a matching %v policy, pin %v", res, gk.policy, gk.pin)
			}
			if got := marshalIndent(t, &e); !bytes.Equal(got, js) {
				t.Fatalf("re-encoded golden evidence differs:\n%s", got)
			}
		})
	}
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
	var signedPIN *Evidence
	for _, gk := range goldenKinds {
		seed := make([]byte, sealstore.SeedSize)
		rand.Read(seed)
		opts := sealstore.SealOptions{Name: "golden-" + gk.kind, PCRs: []int{0, 7}}
		if gk.pin {
			opts.PIN = []byte("golden pin")
		}
		if gk.policy == PolicyAuthorizedPCR {
			opts.Signer = &policyKey.PublicKey
		}
		b, err := sealstore.Seal(ctx, f.tpm, seed, opts)
		if err != nil {
			t.Fatal(err)
		}
		s := Subject{PublicKey: b.PublicKey, SealedPublic: b.Public, SealedPrivate: b.Private, PCRs: b.Policy.Indexes(),
			Policy: SubjectPolicy{Kind: gk.policy, PIN: gk.pin}}
		if gk.policy == PolicyAuthorizedPCR {
			s.Policy.Signer = b.Policy.Signer
			s.Policy.Approvals = []Approval{approvalOf(t, policyKey, values[0], values[7])}
		}
		nonce := newNonce(t)
		e, err := ak.Quote(ctx, f.tpm, s, QuoteRequest{Nonce: nonce, ExtraPCRs: []int{10}, Sign: seedSigner(seed)})
		if err != nil {
			t.Fatal(err)
		}
		if gk.kind == "signed-pin" {
			signedPIN = e
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
	// The fuzz seeds start from the evidence with the most fields, and
	// the version 1 vector.
	writeFuzzCorpora(t, signedPIN, loadGolden(t).e)
}
