package attest

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"golang.org/x/crypto/ssh"
)

// goldenKinds are the version 2 golden vectors: evidence the simulator made
// about an identity of each policy kind, with the files a verifier needs
// (../testdata/evidence/v2-KIND.{json,nonce,ak-name,pub}). The version 1
// vector (v1.*) is kept as it was made, for compatibility.
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

func goldenKindPath(kind, ext string) string { return "../testdata/evidence/v2-" + kind + "." + ext }

// TestGoldenEvidenceKinds verifies the golden evidence of every policy kind
// offline: it verifies, pinned to its AK, and its policy matches.
func TestGoldenEvidenceKinds(t *testing.T) {
	if *update {
		// The vectors themselves come from the TPM side:
		// go test ./internal/attesttpm -run TestGolden -update-golden.
		writeFuzzCorpora(t, loadGoldenKind(t, "signed-pin"), loadGolden(t).e)
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

// loadGoldenKind reads the golden evidence of one kind.
func loadGoldenKind(t testing.TB, kind string) *Evidence {
	t.Helper()
	js, err := os.ReadFile(goldenKindPath(kind, "json"))
	if err != nil {
		t.Fatal(err)
	}
	e := new(Evidence)
	if err := json.Unmarshal(js, e); err != nil {
		t.Fatal(err)
	}
	return e
}
