package attest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

var update = flag.Bool("update", false, "regenerate the golden evidence in testdata from the simulator, and the fuzz seed corpora")

// Golden files: evidence made once by the simulator, with what a verifier
// needs to check it: the nonce it sent, the AK name it pinned and the
// identity it expects. This is the version 1 vector; -update leaves it as
// it is and regenerates the version 2 ones (golden_kinds_test.go).
const (
	goldenEvidence = "../testdata/evidence/v1.json"
	goldenNonce    = "../testdata/evidence/v1.nonce"
	goldenAKName   = "../testdata/evidence/v1.ak-name"
	goldenIdentity = "../testdata/evidence/v1.pub"
)

type golden struct {
	e        *Evidence
	json     []byte
	nonce    []byte
	akName   []byte
	identity ssh.PublicKey
}

func readHexFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func loadGolden(t testing.TB) *golden {
	t.Helper()
	g := &golden{}
	var err error
	if g.json, err = os.ReadFile(goldenEvidence); err != nil {
		t.Fatal(err)
	}
	g.e = new(Evidence)
	if err := json.Unmarshal(g.json, g.e); err != nil {
		t.Fatal(err)
	}
	g.nonce = readHexFile(t, goldenNonce)
	g.akName = readHexFile(t, goldenAKName)
	pub, err := os.ReadFile(goldenIdentity)
	if err != nil {
		t.Fatal(err)
	}
	if g.identity, _, _, _, err = ssh.ParseAuthorizedKey(pub); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *golden) opts() VerifyOptions {
	return VerifyOptions{Nonce: bytes.Clone(g.nonce), TrustedAKName: bytes.Clone(g.akName), IdentityKey: g.identity}
}

// clone returns a deep copy of the golden evidence, through its encoding.
func (g *golden) clone(t testing.TB) *Evidence {
	t.Helper()
	e, err := ParseSSH(g.e.MarshalSSH())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func marshalIndent(t testing.TB, e *Evidence) []byte {
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

// TestGoldenEvidence checks the version 1 vector, kept as it was made:
// evidence from before the policy description still verifies.
func TestGoldenEvidence(t *testing.T) {
	g := loadGolden(t)
	res, err := Verify(g.e, g.opts())
	if err != nil {
		t.Fatal(err)
	}
	if !res.AKPinned || !res.Certified || !res.SealedPolicyMatches {
		t.Fatalf("golden result %+v: want pinned, certified, policy matching", res)
	}
	// The JSON encoding has not drifted: re-encoding gives the file back.
	if got := marshalIndent(t, g.e); !bytes.Equal(got, g.json) {
		t.Fatalf("re-encoded golden evidence differs from %s:\n%s", goldenEvidence, got)
	}
	// The SSH encoding round trips to the same evidence.
	again, err := ParseSSH(g.e.MarshalSSH())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(marshalIndent(t, again), g.json) {
		t.Fatal("SSH round trip changed the golden evidence")
	}
}

// writeFuzzCorpora writes the seed corpora of the fuzz tests: the golden
// evidence and damaged variants of it, in the go test fuzz v1 format.
func writeFuzzCorpora(t *testing.T, e, v1 *Evidence) {
	valid := e.MarshalSSH()
	seeds := map[string][]byte{
		"valid":            valid,
		"valid-v1":         v1.MarshalSSH(),
		"no-approval":      variant(t, e, func(v *Evidence) { v.ApprovedPolicy, v.Approval = nil, nil }),
		"policy-kind-9":    variant(t, e, func(v *Evidence) { v.PolicyKind = 9 }),
		"empty":            {},
		"magic-only":       appendString(nil, []byte(Format)),
		"truncated":        valid[:len(valid)/2],
		"trailing-byte":    append(bytes.Clone(valid), 0),
		"huge-length":      append(appendString(nil, []byte(Format)), 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff),
		"version-3":        variant(t, e, func(v *Evidence) { v.Version = 3 }),
		"sha1-bank":        variant(t, e, func(v *Evidence) { v.Bank = 0x0004 }),
		"no-certify":       variant(t, e, func(v *Evidence) { v.CertifyAttest, v.CertifySignature = nil, nil }),
		"unsorted-pcrs":    variant(t, e, func(v *Evidence) { v.PCRs[0], v.PCRs[1] = v.PCRs[1], v.PCRs[0] }),
		"sealed-unquoted":  variant(t, e, func(v *Evidence) { v.SealedPCRs = []int{23} }),
		"dropped-pcr":      variant(t, e, func(v *Evidence) { v.PCRs, v.PCRValues = v.PCRs[1:], v.PCRValues[1:] }),
		"quote-as-certify": variant(t, e, func(v *Evidence) { v.Attest, v.Signature = v.CertifyAttest, v.CertifySignature }),
		"flipped-possession": variant(t, e, func(v *Evidence) {
			v.Possession[0] ^= 1
		}),
		"flipped-attest": variant(t, e, func(v *Evidence) { v.Attest[0] ^= 1 }),
	}
	js := marshalIndent(t, e)
	jsonSeeds := map[string][]byte{
		"valid":         js,
		"valid-v1":      marshalIndent(t, v1),
		"empty":         {},
		"not-an-object": []byte("[]"),
		"other-format":  bytes.Replace(js, []byte(Format), []byte("icn-agent-evidence-v3"), 1),
		"unknown-field": bytes.Replace(js, []byte(`"bank"`), []byte(`"extra": 1, "bank"`), 1),
		"sha1-bank":     bytes.Replace(js, []byte(`"sha256"`), []byte(`"sha1"`), 1),
		"numeric-bank":  bytes.Replace(js, []byte(`"sha256"`), []byte(`"0x000b"`), 1),
		"bad-hex":       bytes.Replace(js, []byte(`"value": "0`), []byte(`"value": "x`), 1),
		"truncated":     js[:len(js)/2],
		"two-objects":   append(bytes.Clone(js), js...),
	}
	for fuzzer, seeds := range map[string]map[string][]byte{"FuzzParseSSH": seeds, "FuzzVerify": seeds, "FuzzUnmarshalJSON": jsonSeeds} {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds {
			corpus := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(corpus), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// variant returns the SSH encoding of a modified deep copy of e.
func variant(t testing.TB, e *Evidence, mutate func(*Evidence)) []byte {
	t.Helper()
	c, err := ParseSSH(e.MarshalSSH())
	if err != nil {
		t.Fatal(err)
	}
	mutate(c)
	return c.MarshalSSH()
}
