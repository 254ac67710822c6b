package sealstore

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

var update = flag.Bool("update", false, "rewrite the committed fuzz seed corpora in testdata/fuzz")

const fuzzCorpusDir = "testdata/fuzz/FuzzParseBlob"

// checkParse is the fuzz property: ParseBlob never panics, fails with one of
// the documented sentinels, and whatever it accepts survives a
// Marshal/ParseBlob round trip unchanged.
func checkParse(t *testing.T, data []byte) {
	b, err := ParseBlob(data)
	if err != nil {
		if b != nil {
			t.Fatalf("ParseBlob returned a blob and error %v", err)
		}
		if !errors.Is(err, ErrMalformedBlob) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("error %v wraps neither ErrMalformedBlob nor ErrUnsupportedVersion", err)
		}
		return
	}
	out, err := b.Marshal()
	if err != nil {
		t.Fatalf("ParseBlob accepted a blob Marshal rejects: %v", err)
	}
	b2, err := ParseBlob(out)
	if err != nil {
		t.Fatalf("ParseBlob(Marshal(b)): %v", err)
	}
	if !blobsEqual(b, b2) {
		t.Fatalf("round trip changed the blob:\n%+v\n%+v", b, b2)
	}
	if out2, err := b2.Marshal(); err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("Marshal is not deterministic (err %v)", err)
	}
}

func FuzzParseBlob(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(checkParse)
}

// FuzzBlobBody fuzzes the binary content of a blob: it wraps the input in
// the PEM armour, so that mutations reach the field decoder instead of
// mostly breaking the base64.
func FuzzBlobBody(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if block, _ := pem.Decode(s.data); block != nil {
			f.Add(block.Bytes)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkParse(t, armor(body))
	})
}

// fuzzSeed is one file of the committed fuzz corpus.
type fuzzSeed struct {
	name  string
	data  []byte
	valid bool // whether ParseBlob accepts it
}

// fuzzSeeds returns the committed seed corpus of FuzzParseBlob: a valid blob
// and variants broken in typical ways.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	b := testBlob(t, "fuzz")
	valid := mustMarshal(t, b)
	raw := rawFromBlob(b)
	body := raw.body()
	withRaw := func(modify func(*rawBlob)) []byte {
		r := rawFromBlob(b)
		modify(&r)
		return armor(r.body())
	}

	all := make([]int, maxPCRs)
	for i := range all {
		all[i] = i
	}
	many := mustMarshal(t, testBlobPCRs(t, "fuzz-many", testPCRs(testRand("fuzz many"), all...)))

	flipped := bytes.Clone(body)
	flipped[len(flipped)/3] ^= 0x10

	hugeLen := bytes.Clone(body)
	binary.BigEndian.PutUint32(hugeLen[4+len(blobMagic)+4:], 0xfffffff0) // name length

	withKind := func(k testKind, modify func(*rawBlob)) []byte {
		r := rawFromBlob(testBlobKind(t, "fuzz-"+strings.ReplaceAll(k.name, "+", "-"), k))
		modify(&r)
		return armor(r.body())
	}
	keep := func(*rawBlob) {}

	return []fuzzSeed{
		{"valid", valid, true},
		{"valid-pcr-pin", withKind(testKinds[1], keep), true},
		{"valid-signed", withKind(testKinds[2], keep), true},
		{"valid-signed-pin", withKind(testKinds[3], keep), true},
		{"signed-with-pcr-values", withKind(testKinds[2], func(r *rawBlob) { r.pcrs[0].value = make([]byte, 32) }), false},
		{"signed-bad-key", withKind(testKinds[2], func(r *rawBlob) { r.signer = flip(r.signer, len(r.signer)-1) }), false},
		{"pin-with-noda", withKind(testKinds[1], func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.NoDA = true })
		}), false},
		{"policy-kind-3", withRaw(func(r *rawBlob) { r.kind = 3 }), false},
		{"valid-24-pcrs", many, true},
		{"valid-crlf-whitespace", append([]byte("\r\n  "), bytes.ReplaceAll(valid, []byte("\n"), []byte("\r\n"))...), true},
		{"empty", nil, false},
		{"truncated-pem", valid[:len(valid)/2], false},
		{"truncated-body", armor(body[:len(body)-9]), false},
		{"bit-flipped", armor(flipped), false},
		{"trailing-garbage", append(bytes.Clone(valid), "garbage\n"...), false},
		{"trailing-bytes-in-body", armor(append(bytes.Clone(body), 0, 0)), false},
		{"wrong-version", withRaw(func(r *rawBlob) { r.version = 2 }), false},
		{"wrong-pem-type", pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: body}), false},
		{"pem-headers", pem.EncodeToMemory(&pem.Block{Type: pemType, Headers: map[string]string{"A": "b"}, Bytes: body}), false},
		{"huge-length", armor(hugeLen), false},
		{"pcr-value-short", withRaw(func(r *rawBlob) { r.pcrs[1].value = r.pcrs[1].value[:5] }), false},
		{"sha1-bank", withRaw(func(r *rawBlob) { r.bank = uint16(tpm2.TPMAlgSHA1) }), false},
		{"user-with-auth", withRaw(func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true })
		}), false},
	}
}

// corpusFile encodes data in the "go test fuzz v1" format.
func corpusFile(data []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n")
}

// TestFuzzCorpus checks that the seeds behave as labelled and that the
// committed corpus matches them; with -update it rewrites the corpus.
func TestFuzzCorpus(t *testing.T) {
	for _, s := range fuzzSeeds(t) {
		_, err := ParseBlob(s.data)
		if s.valid != (err == nil) {
			t.Errorf("seed %s: ParseBlob error %v, want valid=%v", s.name, err, s.valid)
		}
		path := filepath.Join(fuzzCorpusDir, s.name)
		want := corpusFile(s.data)
		if *update {
			if err := os.MkdirAll(fuzzCorpusDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %s: %v (run go test -run TestFuzzCorpus -update)", s.name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("seed %s: %s is stale (run go test -run TestFuzzCorpus -update)", s.name, path)
		}
	}
}

const policyFuzzCorpusDir = "testdata/fuzz/FuzzParseSignedPolicy"

// checkParsePolicy is the fuzz property of ParseSignedPolicy: no panic, a
// documented sentinel on failure, and a stable round trip on success.
func checkParsePolicy(t *testing.T, data []byte) {
	p, err := ParseSignedPolicy(data)
	if err != nil {
		if p != nil {
			t.Fatalf("ParseSignedPolicy returned a policy and error %v", err)
		}
		if !errors.Is(err, ErrMalformedPolicy) && !errors.Is(err, ErrUnsupportedPolicyVersion) {
			t.Fatalf("error %v wraps neither ErrMalformedPolicy nor ErrUnsupportedPolicyVersion", err)
		}
		return
	}
	out, err := p.Marshal()
	if err != nil {
		t.Fatalf("ParseSignedPolicy accepted a policy Marshal rejects: %v", err)
	}
	p2, err := ParseSignedPolicy(out)
	if err != nil {
		t.Fatalf("ParseSignedPolicy(Marshal(p)): %v", err)
	}
	if !signedPoliciesEqual(p, p2) {
		t.Fatalf("round trip changed the policy")
	}
	if out2, err := p2.Marshal(); err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("Marshal is not deterministic (err %v)", err)
	}
}

func FuzzParseSignedPolicy(f *testing.F) {
	for _, s := range policyFuzzSeeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(checkParsePolicy)
}

// FuzzSignedPolicyBody fuzzes the binary content of a signed policy inside
// its PEM armour.
func FuzzSignedPolicyBody(f *testing.F) {
	for _, s := range policyFuzzSeeds(f) {
		if block, _ := pem.Decode(s.data); block != nil {
			f.Add(block.Bytes)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkParsePolicy(t, armorPolicy(body))
	})
}

// policyFuzzSeeds returns the committed seed corpus of
// FuzzParseSignedPolicy: valid policies and variants broken in typical
// ways.
func policyFuzzSeeds(t testing.TB) []fuzzSeed {
	p, err := SignPolicy(testPolicyKey(t, "fuzz"), testPCRs(testRand("fuzz policy"), 0, 7), "fuzz firmware 1.0", time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	valid, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, maxPCRs)
	for i := range all {
		all[i] = i
	}
	many, err := SignPolicy(testPolicyKey(t, "fuzz"), testPCRs(testRand("fuzz many"), all...), "", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	manyData, err := many.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	body := rawFromPolicy(p).body()
	withRaw := func(modify func(*rawPolicy)) []byte {
		r := rawFromPolicy(p)
		modify(&r)
		return armorPolicy(r.body())
	}
	return []fuzzSeed{
		{"valid", valid, true},
		{"valid-24-pcrs", manyData, true},
		{"empty", nil, false},
		{"truncated-body", armorPolicy(body[:len(body)-5]), false},
		{"trailing-bytes-in-body", armorPolicy(append(bytes.Clone(body), 0)), false},
		{"wrong-version", withRaw(func(r *rawPolicy) { r.version = 2 }), false},
		{"blob-pem-type", armor(body), false},
		{"digest-mismatch", withRaw(func(r *rawPolicy) { r.digest = flip(r.digest, 0) }), false},
		{"bad-signature", withRaw(func(r *rawPolicy) { r.s = flip(r.s, 31) }), false},
		{"key-off-curve", withRaw(func(r *rawPolicy) { r.key = flip(r.key, 64) }), false},
		{"pcr-value-short", withRaw(func(r *rawPolicy) { r.pcrs[1].value = r.pcrs[1].value[:5] }), false},
		{"huge-count", withRaw(func(r *rawPolicy) { r.count = u32(0xfffffff0) }), false},
	}
}

// TestSignedPolicyFuzzCorpus checks the signed-policy seeds and the
// committed corpus; with -update it rewrites the corpus.
func TestSignedPolicyFuzzCorpus(t *testing.T) {
	for _, s := range policyFuzzSeeds(t) {
		_, err := ParseSignedPolicy(s.data)
		if s.valid != (err == nil) {
			t.Errorf("seed %s: ParseSignedPolicy error %v, want valid=%v", s.name, err, s.valid)
		}
		path := filepath.Join(policyFuzzCorpusDir, s.name)
		want := corpusFile(s.data)
		if *update {
			if err := os.MkdirAll(policyFuzzCorpusDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %s: %v (run go test -run TestSignedPolicyFuzzCorpus -update)", s.name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("seed %s: %s is stale (run go test -run TestSignedPolicyFuzzCorpus -update)", s.name, path)
		}
	}
}
