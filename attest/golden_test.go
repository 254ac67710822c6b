package attest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/sealstore"
)

var update = flag.Bool("update", false, "regenerate the golden evidence in testdata from the simulator, and the fuzz seed corpora")

// Golden files: evidence made once by the simulator, with what a verifier
// needs to check it: the nonce it sent, the AK name it pinned and the
// identity it expects.
const (
	goldenEvidence = "testdata/evidence-v1.json"
	goldenNonce    = "testdata/evidence-v1.nonce"
	goldenAKName   = "testdata/evidence-v1.ak-name"
	goldenIdentity = "testdata/evidence-v1.pub"
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

func TestGoldenEvidence(t *testing.T) {
	if *update {
		regenerateGolden(t)
	}
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

// regenerateGolden makes new golden evidence with the simulator and
// rewrites the fuzz seed corpora from it.
func regenerateGolden(t *testing.T) {
	f := newFixture(t, "sim")
	ctx := context.Background()
	// Non-zero values make the vectors less trivial: as if Secure Boot
	// state (7) and an IMA-like measurement (10) had been recorded.
	f.extend(7)
	f.extend(10)
	b, err := sealstore.Generate(ctx, f.tpm, sealstore.SealOptions{Name: "golden", PCRs: []int{0, 7}})
	if err != nil {
		t.Fatal(err)
	}
	ak := f.ak("")
	nonce := newNonce(t)
	s := Subject{PublicKey: b.PublicKey, SealedPublic: b.Public, SealedPrivate: b.Private, PCRs: b.Policy.Indexes()}
	e, err := ak.Quote(ctx, f.tpm, s, QuoteRequest{Nonce: nonce, ExtraPCRs: []int{1, 10}, Sign: unsealingSigner(f.tpm, b)})
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{
		goldenEvidence: marshalIndent(t, e),
		goldenNonce:    []byte(hex.EncodeToString(nonce) + "\n"),
		goldenAKName:   []byte(hex.EncodeToString(ak.Name()) + "\n"),
		goldenIdentity: ssh.MarshalAuthorizedKey(b.PublicKey),
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFuzzCorpora(t, e)
}

// writeFuzzCorpora writes the seed corpora of the fuzz tests: the golden
// evidence and damaged variants of it, in the go test fuzz v1 format.
func writeFuzzCorpora(t *testing.T, e *Evidence) {
	valid := e.MarshalSSH()
	seeds := map[string][]byte{
		"valid":            valid,
		"empty":            {},
		"magic-only":       appendString(nil, []byte(Format)),
		"truncated":        valid[:len(valid)/2],
		"trailing-byte":    append(bytes.Clone(valid), 0),
		"huge-length":      append(appendString(nil, []byte(Format)), 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff),
		"version-2":        variant(t, e, func(v *Evidence) { v.Version = 2 }),
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
		"empty":         {},
		"not-an-object": []byte("[]"),
		"other-format":  bytes.Replace(js, []byte(Format), []byte("icn-agent-evidence-v2"), 1),
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
