package sealstore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// testPolicyKey returns a deterministic P-256 policy signing key for label.
func testPolicyKey(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	for i := 0; ; i++ {
		d := sha256.Sum256([]byte("sealstore test policy key " + label + string(rune('a'+i))))
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
		if err == nil {
			return k
		}
	}
}

// testKind is one shape of blob policy.
type testKind struct {
	name   string
	kind   PolicyKind
	pin    bool
	byteOf byte // the policy kind byte in the file
}

var testKinds = []testKind{
	{"pcr", PolicyPCR, false, 0x01},
	{"pcr+pin", PolicyPCR, true, 0x81},
	{"signed", PolicyAuthorizedPCR, false, 0x02},
	{"signed+pin", PolicyAuthorizedPCR, true, 0x82},
}

// testBlobKind is testBlob with the given kind of policy.
func testBlobKind(t testing.TB, name string, k testKind) *Blob {
	t.Helper()
	b := testBlob(t, name)
	p := Policy{Kind: k.kind, PIN: k.pin, Bank: tpm2.TPMAlgSHA256}
	for _, v := range b.Policy.PCRs {
		if k.kind == PolicyAuthorizedPCR {
			v.Value = nil
		}
		p.PCRs = append(p.PCRs, v)
	}
	if k.kind == PolicyAuthorizedPCR {
		key, err := NewPolicyKey(&testPolicyKey(t, name).PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		p.Signer = key.PolicyKeyPublic()
	}
	d, err := PolicyDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	p.Digest = d
	b.Policy = p
	pub := testSealedPublic(testRand(name+" kind"), d)
	pub.ObjectAttributes.NoDA = !k.pin
	b.Public = tpm2.Marshal(tpm2.New2B(pub))
	return b
}

func TestBlobRoundTripKinds(t *testing.T) {
	for _, k := range testKinds {
		t.Run(k.name, func(t *testing.T) {
			b := testBlobKind(t, "kinds", k)
			data := mustMarshal(t, b)
			got, err := ParseBlob(data)
			if err != nil {
				t.Fatal(err)
			}
			if !blobsEqual(got, b) {
				t.Errorf("round trip changed the blob:\n got %+v\nwant %+v", got.Policy, b.Policy)
			}
			if again := mustMarshal(t, got); !bytes.Equal(again, data) {
				t.Errorf("Marshal(ParseBlob(data)) != data")
			}
			block, _ := pem.Decode(data)
			off := 4 + len(blobMagic) + 4 + 4 + len(b.Name) + 4 + len(b.Comment) + 4 + len(b.PublicKey.Marshal())
			if kb := block.Bytes[off]; kb != k.byteOf {
				t.Errorf("policy kind byte %#x, want %#x", kb, k.byteOf)
			}
			if got.Policy.HasValues() != (k.kind == PolicyPCR) {
				t.Errorf("HasValues = %v", got.Policy.HasValues())
			}
			pub, err := got.SealedPublic()
			if err != nil || pub.ObjectAttributes.NoDA == k.pin {
				t.Errorf("SealedPublic: noDA %v, %v; want noDA %v", pub.ObjectAttributes.NoDA, err, !k.pin)
			}
		})
	}
}

// rawSigned builds a raw blob of kind k whose fields the case may break.
func rawSigned(t *testing.T, k testKind) rawBlob {
	r := rawFromBlob(testBlobKind(t, "raw", k))
	r.kind = k.byteOf
	r.public = bytes.Clone(r.public)
	return r
}

func TestParseBlobMalformedKinds(t *testing.T) {
	signed := testKinds[2]
	signedPIN := testKinds[3]
	pcrPIN := testKinds[1]
	other, _ := NewPolicyKey(&testPolicyKey(t, "other").PublicKey)
	tests := []struct {
		name    string
		k       testKind
		modify  func(*rawBlob)
		wantErr string
	}{
		{"kind 0", testKinds[0], func(r *rawBlob) { r.kind = 0 }, "policy kind: 0 is not supported"},
		{"kind 3", testKinds[0], func(r *rawBlob) { r.kind = 3 }, "policy kind: 3 is not supported"},
		{"kind 0x80", testKinds[0], func(r *rawBlob) { r.kind = 0x80 }, "policy kind: 128 is not supported"},
		{"kind 0xff", testKinds[0], func(r *rawBlob) { r.kind = 0xff }, "policy kind: 255 is not supported"},
		{"pin bit without pin digest", testKinds[0], func(r *rawBlob) { r.kind = 0x81 }, "policy digest: does not match the pcr values"},
		{"pin digest without pin bit", pcrPIN, func(r *rawBlob) { r.kind = 0x01 }, "policy digest: does not match the pcr values"},
		{"pcr with noDA clear", testKinds[0], func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.NoDA = false })
		}, "tpm2b public: attribute noDA must be set"},
		{"pin with noDA set", pcrPIN, func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.NoDA = true })
		}, "tpm2b public: attribute noDA must be clear"},
		{"signed pin with noDA set", signedPIN, func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.NoDA = true })
		}, "tpm2b public: attribute noDA must be clear"},
		{"signed with a pcr value", signed, func(r *rawBlob) { r.pcrs[1].value = make([]byte, 32) }, "pcr 7 value: want none in a signed PCR policy, got 32 bytes"},
		{"signed as pcr kind", signed, func(r *rawBlob) { r.kind = 1 }, "pcr 0 value: want 32 bytes, got 0"},
		{"pcr as signed kind", testKinds[0], func(r *rawBlob) { r.kind = 2 }, "pcr 0 value: want none in a signed PCR policy, got 32 bytes"},
		{"signed pin bit dropped", signedPIN, func(r *rawBlob) { r.kind = 2 }, "policy digest: does not match the policy key"},
		{"signed other key", signed, func(r *rawBlob) { r.signer = other.PolicyKeyPublic() }, "policy digest: does not match the policy key"},
		{"signer empty", signed, func(r *rawBlob) { r.signer = nil }, "policy key: want 90 bytes, got 0"},
		{"signer short", signed, func(r *rawBlob) { r.signer = r.signer[:89] }, "policy key: want 90 bytes, got 89"},
		{"signer huge", signed, func(r *rawBlob) { r.signer = make([]byte, 2000) }, "policy key: length 2000 exceeds the maximum of 1024"},
		{"signer off curve", signed, func(r *rawBlob) { r.signer = flip(r.signer, len(r.signer)-1) }, "policy key: "},
		{"signer other attributes", signed, func(r *rawBlob) {
			s := bytes.Clone(r.signer)
			s[9] |= 0x04 // objectAttributes byte 3: set decrypt (0x00020000)
			r.signer = s
		}, "policy key: not the public area of an ECDSA P-256 policy key"},
		{"signer rsa", signed, func(r *rawBlob) {
			s := bytes.Clone(r.signer)
			s[3] = 0x01
			r.signer = s
		}, "policy key: not the public area of an ECDSA P-256 policy key"},
		{"signed digest flipped", signed, func(r *rawBlob) {
			r.digest = flip(r.digest, 0)
			r.withPublic(func(p *tpm2.TPMTPublic) {})
		}, "policy digest: does not match the policy key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawSigned(t, tt.k)
			tt.modify(&r)
			b, err := ParseBlob(armor(r.body()))
			if err == nil {
				t.Fatalf("ParseBlob succeeded, want error containing %q", tt.wantErr)
			}
			if b != nil {
				t.Errorf("ParseBlob returned a blob with error %v", err)
			}
			if !errors.Is(err, ErrMalformedBlob) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want ErrMalformedBlob containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMarshalValidatesKinds(t *testing.T) {
	tests := []struct {
		name    string
		k       testKind
		modify  func(*Blob)
		wantErr string
	}{
		{"signed without signer", testKinds[2], func(b *Blob) { b.Policy.Signer = nil }, "policy key: want 90 bytes"},
		{"pcr with signer", testKinds[0], func(b *Blob) { b.Policy.Signer = testBlobKind(t, "x", testKinds[2]).Policy.Signer }, "policy key: only a signed PCR policy has one"},
		{"signed with values", testKinds[2], func(b *Blob) { b.Policy.PCRs[0].Value = make([]byte, 32) }, "pcr 0 value: want none"},
		{"signed with empty non-nil value", testKinds[2], func(b *Blob) { b.Policy.PCRs[0].Value = []byte{} }, "pcr 0 value: want none"},
		{"pin flipped", testKinds[1], func(b *Blob) { b.Policy.PIN = false }, "policy digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBlobKind(t, "marshal", tt.k)
			tt.modify(b)
			if _, err := b.Marshal(); !errors.Is(err, ErrMalformedBlob) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Marshal error = %v, want ErrMalformedBlob containing %q", err, tt.wantErr)
			}
		})
	}
}

// specAuthorize computes TPM2_PolicyAuthorize's digest (empty policyRef)
// from TPM 2.0 Part 3, section 23.16, without the go-tpm calculator.
func specAuthorize(keyName []byte) []byte {
	h := sha256.New()
	h.Write(make([]byte, 32))
	h.Write(binary.BigEndian.AppendUint32(nil, 0x16a)) // TPM_CC_PolicyAuthorize
	h.Write(keyName)
	d := h.Sum(nil)
	h.Reset()
	h.Write(d) // || policyRef, empty
	return h.Sum(nil)
}

// specAuthValue extends d with TPM2_PolicyAuthValue (Part 3, 23.17).
func specAuthValue(d []byte) []byte {
	h := sha256.New()
	h.Write(d)
	h.Write(binary.BigEndian.AppendUint32(nil, 0x16b)) // TPM_CC_PolicyAuthValue
	return h.Sum(nil)
}

func TestPolicyDigestKinds(t *testing.T) {
	key, err := NewPolicyKey(&testPolicyKey(t, "digest").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := testPCRs(testRand("digest kinds"), 0, 7)
	sel := []PCRValue{{Index: 0}, {Index: 7}}
	tests := []struct {
		name string
		p    Policy
		want []byte
	}{
		{"pcr", Policy{Kind: PolicyPCR, Bank: tpm2.TPMAlgSHA256, PCRs: pcrs}, specPolicyPCR(pcrs)},
		{"pcr+pin", Policy{Kind: PolicyPCR, PIN: true, Bank: tpm2.TPMAlgSHA256, PCRs: pcrs}, specAuthValue(specPolicyPCR(pcrs))},
		{"signed", Policy{Kind: PolicyAuthorizedPCR, Bank: tpm2.TPMAlgSHA256, PCRs: sel, Signer: key.PolicyKeyPublic()}, specAuthorize(key.Name)},
		{"signed+pin", Policy{Kind: PolicyAuthorizedPCR, PIN: true, Bank: tpm2.TPMAlgSHA256, PCRs: sel, Signer: key.PolicyKeyPublic()}, specAuthValue(specAuthorize(key.Name))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PolicyDigest(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("PolicyDigest = %x, want %x", got, tt.want)
			}
		})
	}
	if _, err := PolicyDigest(Policy{Kind: 9}); err == nil {
		t.Errorf("PolicyDigest of kind 9 succeeded")
	}
	if _, err := PolicyAuthorizeDigest(key.Name[:33]); err == nil {
		t.Errorf("PolicyAuthorizeDigest of a 33-byte name succeeded")
	}
}

// TestPolicyDigestSimulator cross-checks the PolicyAuthorize and
// PolicyAuthValue digests against a TPM's trial sessions, and the policy
// key's Name against the TPM's.
func TestPolicyDigestSimulator(t *testing.T) {
	tpm := openSimulator(t)
	key, err := NewPolicyKey(&testPolicyKey(t, "sim").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := tpm2.LoadExternal{InPublic: tpm2.New2B(key.TPMPublic), Hierarchy: tpm2.TPMRHOwner}.Execute(tpm)
	if err != nil {
		t.Fatalf("LoadExternal: %v", err)
	}
	tpm2.FlushContext{FlushHandle: ext.ObjectHandle}.Execute(tpm)
	if !bytes.Equal(ext.Name.Buffer, key.Name) {
		t.Errorf("TPM names the policy key %x, PolicyKey.Name is %x", ext.Name.Buffer, key.Name)
	}
	for _, pin := range []bool{false, true} {
		sess, closeSess, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
		if err != nil {
			t.Fatal(err)
		}
		// In a trial session PolicyAuthorize checks no ticket.
		_, err = tpm2.PolicyAuthorize{
			PolicySession: sess.Handle(),
			KeySign:       tpm2.TPM2BName{Buffer: key.Name},
			CheckTicket:   tpm2.TPMTTKVerified{Tag: tpm2.TPMSTVerified, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("PolicyAuthorize: %v", err)
		}
		if pin {
			if _, err := (tpm2.PolicyAuthValue{PolicySession: sess.Handle()}).Execute(tpm); err != nil {
				t.Fatal(err)
			}
		}
		rsp, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(tpm)
		closeSess()
		if err != nil {
			t.Fatal(err)
		}
		want, err := PolicyDigest(Policy{Kind: PolicyAuthorizedPCR, PIN: pin, Bank: tpm2.TPMAlgSHA256, PCRs: []PCRValue{{Index: 7}}, Signer: key.PolicyKeyPublic()})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rsp.PolicyDigest.Buffer, want) {
			t.Errorf("pin %v: TPM digest %x, PolicyDigest %x", pin, rsp.PolicyDigest.Buffer, want)
		}
	}
}

func TestPolicyMismatch(t *testing.T) {
	pcr := testBlobKind(t, "mm", testKinds[0])
	signed := testBlobKind(t, "mm", testKinds[2])
	v0, v7 := pcr.Policy.PCRs[0].Value, pcr.Policy.PCRs[1].Value
	other := make([]byte, 32)
	tests := []struct {
		name    string
		p       Policy
		current map[int][]byte
		want    []int
	}{
		{"pcr same", pcr.Policy, map[int][]byte{0: v0, 7: v7}, nil},
		{"pcr one moved", pcr.Policy, map[int][]byte{0: v0, 7: other}, []int{7}},
		{"pcr unknown", pcr.Policy, map[int][]byte{}, nil},
		{"signed never", signed.Policy, map[int][]byte{0: other, 7: other, 14: other}, nil},
	}
	for _, tt := range tests {
		if got := tt.p.Mismatch(tt.current); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Mismatch = %v, want %v", tt.name, got, tt.want)
		}
	}
	if k, err := signed.Policy.SignerKey(); err != nil || k.ID() == "" {
		t.Errorf("SignerKey of a signed policy: %v", err)
	}
	if _, err := pcr.Policy.SignerKey(); err == nil {
		t.Errorf("SignerKey of a PCR policy succeeded")
	}
}

// testSignedPolicy returns a deterministic signed policy.
func testSignedPolicy(t testing.TB, label string, indexes ...int) *SignedPolicy {
	t.Helper()
	p, err := SignPolicy(testPolicyKey(t, label), testPCRs(testRand(label+" values"), indexes...), label+" firmware", time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func signedPoliciesEqual(a, b *SignedPolicy) bool {
	return a.Comment == b.Comment && a.Bank == b.Bank && slices.EqualFunc(a.PCRs, b.PCRs, func(x, y PCRValue) bool {
		return x.Index == y.Index && bytes.Equal(x.Value, y.Value)
	}) && bytes.Equal(a.Digest, b.Digest) && bytes.Equal(a.Key.Name, b.Key.Name) &&
		bytes.Equal(a.R, b.R) && bytes.Equal(a.S, b.S) && a.Signed.Equal(b.Signed)
}

func TestSignedPolicyRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		indexes []int
		modify  func(*SignedPolicy)
	}{
		{"0,7", []int{0, 7}, func(*SignedPolicy) {}},
		{"one", []int{23}, func(*SignedPolicy) {}},
		{"all", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}, func(*SignedPolicy) {}},
		{"empty comment", []int{7}, func(p *SignedPolicy) { p.Comment = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testSignedPolicy(t, "rt "+tt.name, tt.indexes...)
			tt.modify(p)
			data, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseSignedPolicy(data)
			if err != nil {
				t.Fatal(err)
			}
			if !signedPoliciesEqual(got, p) {
				t.Errorf("round trip changed the policy")
			}
			if again, err := got.Marshal(); err != nil || !bytes.Equal(again, data) {
				t.Errorf("Marshal(ParseSignedPolicy(data)) != data (%v)", err)
			}
			if !slices.Equal(got.Indexes(), tt.indexes) {
				t.Errorf("Indexes = %v, want %v", got.Indexes(), tt.indexes)
			}
		})
	}
}

func TestSignedPolicyFormat(t *testing.T) {
	p := testSignedPolicy(t, "fmt", 0, 7)
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || len(rest) != 0 || block.Type != "ICN AGENT SIGNED PCR POLICY" || len(block.Headers) != 0 {
		t.Fatalf("not one headerless ICN AGENT SIGNED PCR POLICY PEM block")
	}
	want := "\x00\x00\x00\x1bicn-agent-signed-pcr-policy\x00\x00\x00\x01\x00\x00\x00\x0cfmt firmware\x00\x0b\x00\x00\x00\x02\x00\x00\x00\x00\x20"
	if !bytes.HasPrefix(block.Bytes, []byte(want)) {
		t.Errorf("body starts %q, want %q", block.Bytes[:len(want)], want)
	}
	// The signature is ECDSA over SHA256(approvedPolicy), verifiable with
	// nothing but the standard library.
	h := sha256.Sum256(p.Digest)
	der, _ := ecdsaASN1(p.R, p.S)
	if !ecdsa.VerifyASN1(&testPolicyKey(t, "fmt").PublicKey, h[:], der) {
		t.Errorf("signature does not verify over SHA256(approved policy)")
	}
	if want := hex.EncodeToString(p.Digest) + "-" + p.Key.ID() + ".policy"; p.FileName() != want || len(p.Key.ID()) != 16 {
		t.Errorf("FileName = %q, want %q", p.FileName(), want)
	}
	// Deterministic signatures: signing again gives the same file.
	again, err := testSignedPolicy(t, "fmt", 0, 7).Marshal()
	if err != nil || !bytes.Equal(again, data) {
		t.Errorf("signing the same values twice gave different files (%v)", err)
	}
}

// ecdsaASN1 encodes r, s as an ASN.1 ECDSA signature.
func ecdsaASN1(r, s []byte) ([]byte, error) {
	enc := func(v []byte) []byte {
		v = bytes.TrimLeft(v, "\x00")
		if len(v) == 0 || v[0]&0x80 != 0 {
			v = append([]byte{0}, v...)
		}
		return append([]byte{0x02, byte(len(v))}, v...)
	}
	body := append(enc(r), enc(s)...)
	return append([]byte{0x30, byte(len(body))}, body...), nil
}

// rawPolicy is a signed policy's body, field by field, unchecked.
type rawPolicy struct {
	magic    string
	version  uint32
	comment  string
	bank     uint16
	count    *uint32
	pcrs     []rawPCR
	digest   []byte
	key      []byte
	r, s     []byte
	signed   int64
	trailing []byte
}

func rawFromPolicy(p *SignedPolicy) rawPolicy {
	r := rawPolicy{
		magic: policyMagic, version: SignedPolicyVersion, comment: p.Comment, bank: uint16(p.Bank),
		digest: bytes.Clone(p.Digest), key: p.Key.point(), r: bytes.Clone(p.R), s: bytes.Clone(p.S), signed: p.Signed.Unix(),
	}
	for _, v := range p.PCRs {
		r.pcrs = append(r.pcrs, rawPCR{byte(v.Index), bytes.Clone(v.Value)})
	}
	return r
}

func (r rawPolicy) body() []byte {
	var w []byte
	w = appendString(w, []byte(r.magic))
	w = binary.BigEndian.AppendUint32(w, r.version)
	w = appendString(w, []byte(r.comment))
	w = binary.BigEndian.AppendUint16(w, r.bank)
	count := uint32(len(r.pcrs))
	if r.count != nil {
		count = *r.count
	}
	w = binary.BigEndian.AppendUint32(w, count)
	for _, p := range r.pcrs {
		w = append(w, p.index)
		w = appendString(w, p.value)
	}
	w = appendString(w, r.digest)
	w = appendString(w, r.key)
	w = appendString(w, r.r)
	w = appendString(w, r.s)
	w = binary.BigEndian.AppendUint64(w, uint64(r.signed))
	return append(w, r.trailing...)
}

func armorPolicy(body []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: policyPEMType, Bytes: body})
}

// resign recomputes the digest of r's values and signs it with label's key.
func (r *rawPolicy) resign(t *testing.T, label string) {
	var pcrs []PCRValue
	for _, p := range r.pcrs {
		pcrs = append(pcrs, PCRValue{int(p.index), p.value})
	}
	p, err := SignPolicy(testPolicyKey(t, label), pcrs, "", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	r.digest, r.key, r.r, r.s = p.Digest, p.Key.point(), p.R, p.S
}

func TestParseSignedPolicyMalformed(t *testing.T) {
	const label = "bad"
	other := testSignedPolicy(t, "other key", 0, 7)
	tests := []struct {
		name    string
		modify  func(*rawPolicy)
		wantErr string
	}{
		{"bad magic", func(r *rawPolicy) { r.magic = "icn-agent-sealed-identity" }, "magic: not an icn-agent signed policy"},
		{"comment newline", func(r *rawPolicy) { r.comment = "a\nb" }, "comment: control character U+000A"},
		{"comment too long", func(r *rawPolicy) { r.comment = strings.Repeat("c", 1025) }, "comment: length 1025 exceeds the maximum of 1024"},
		{"bank sha1", func(r *rawPolicy) { r.bank = uint16(tpm2.TPMAlgSHA1) }, "pcr bank: 0x0004 is not supported"},
		{"pcr count 0", func(r *rawPolicy) { r.count = u32(0) }, "pcr count: want 1 to 24, got 0"},
		{"pcr count huge", func(r *rawPolicy) { r.count = u32(0xffffffff) }, "pcr count: want 1 to 24, got 4294967295"},
		{"pcr unsorted", func(r *rawPolicy) { r.pcrs[0], r.pcrs[1] = r.pcrs[1], r.pcrs[0] }, "pcr entry 1 index: 0 after 7"},
		{"pcr index 24", func(r *rawPolicy) { r.pcrs[1].index = 24 }, "pcr entry 1 index: 24 out of range"},
		{"pcr value short", func(r *rawPolicy) { r.pcrs[1].value = r.pcrs[1].value[:5] }, "pcr 7 value: want 32 bytes, got 5"},
		{"pcr value changed", func(r *rawPolicy) { r.pcrs[1].value = make([]byte, 32) }, "policy digest: does not match the pcr values"},
		{"digest flipped", func(r *rawPolicy) { r.digest = flip(r.digest, 5) }, "policy digest: does not match the pcr values"},
		{"values changed and digest fixed", func(r *rawPolicy) {
			r.pcrs[1].value = make([]byte, 32)
			d, _ := PolicyPCRDigest(tpm2.TPMAlgSHA256, []PCRValue{{0, r.pcrs[0].value}, {7, r.pcrs[1].value}})
			r.digest = d
		}, "signature: does not verify with the policy key"},
		{"key of another signer", func(r *rawPolicy) { r.key = other.Key.point() }, "signature: does not verify with the policy key"},
		{"key compressed", func(r *rawPolicy) { r.key = append([]byte{2}, r.key[1:33]...) }, "policy key: "},
		{"key off curve", func(r *rawPolicy) { r.key = flip(r.key, 64) }, "policy key: "},
		{"key too long", func(r *rawPolicy) { r.key = append(r.key, 0) }, "policy key: length 66 exceeds the maximum of 65"},
		{"r flipped", func(r *rawPolicy) { r.r = flip(r.r, 31) }, "signature: does not verify"},
		{"s zero", func(r *rawPolicy) { r.s = make([]byte, 32) }, "signature: does not verify"},
		{"r short", func(r *rawPolicy) { r.r = r.r[1:] }, "signature: want r and s of 32 bytes each, got 31 and 32"},
		{"s long", func(r *rawPolicy) { r.s = append(r.s, 0) }, "signature s: length 33 exceeds the maximum of 32"},
		{"trailing", func(r *rawPolicy) { r.trailing = []byte{0} }, "end: 1 trailing bytes"},
		{"resigned is valid but trailing", func(r *rawPolicy) { r.resign(t, label); r.trailing = []byte("x") }, "end: 1 trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawFromPolicy(testSignedPolicy(t, label, 0, 7))
			tt.modify(&r)
			p, err := ParseSignedPolicy(armorPolicy(r.body()))
			if err == nil {
				t.Fatalf("ParseSignedPolicy succeeded, want error containing %q", tt.wantErr)
			}
			if p != nil {
				t.Errorf("ParseSignedPolicy returned a policy with error %v", err)
			}
			if !errors.Is(err, ErrMalformedPolicy) || errors.Is(err, ErrMalformedBlob) {
				t.Errorf("error %v: want ErrMalformedPolicy and not ErrMalformedBlob", err)
			}
			if !strings.HasPrefix(err.Error(), "sealstore: malformed signed policy: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	// A re-signed body is valid: the cases above fail for their reason.
	r := rawFromPolicy(testSignedPolicy(t, label, 0, 7))
	r.pcrs[1].value = make([]byte, 32)
	r.resign(t, label)
	if _, err := ParseSignedPolicy(armorPolicy(r.body())); err != nil {
		t.Errorf("re-signed policy: %v", err)
	}
}

func TestParseSignedPolicyEnvelope(t *testing.T) {
	valid, err := testSignedPolicy(t, "env", 0, 7).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	body := rawFromPolicy(testSignedPolicy(t, "env", 0, 7)).body()
	r := rawFromPolicy(testSignedPolicy(t, "env", 0, 7))
	r.version = 2
	r.trailing = []byte("anything")
	tests := []struct {
		name     string
		data     []byte
		sentinel error
		wantErr  string
	}{
		{"empty", nil, ErrMalformedPolicy, "pem: empty file"},
		{"blob pem type", armor(body), ErrMalformedPolicy, `pem: type "ICN AGENT SEALED IDENTITY"`},
		{"text after", append(bytes.Clone(valid), "x"...), ErrMalformedPolicy, "pem: data after the PEM block"},
		{"two blocks", append(bytes.Clone(valid), valid...), ErrMalformedPolicy, "pem: want exactly one PEM block"},
		{"too large", append(bytes.Clone(valid), bytes.Repeat([]byte(" "), maxPolicyFile)...), ErrMalformedPolicy, "file too large"},
		{"truncated", armorPolicy(body[:len(body)-3]), ErrMalformedPolicy, "signed: truncated"},
		{"version 2", armorPolicy(r.body()), ErrUnsupportedPolicyVersion, "sealstore: unsupported signed policy version 2 (this icn-agent reads version 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSignedPolicy(tt.data)
			if !errors.Is(err, tt.sentinel) || err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want %v containing %q", err, tt.sentinel, tt.wantErr)
			}
		})
	}
	for n := range len(body) {
		if _, err := ParseSignedPolicy(armorPolicy(body[:n])); !errors.Is(err, ErrMalformedPolicy) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("body cut to %d of %d bytes: %v", n, len(body), err)
		}
	}
}

func TestSignPolicyErrors(t *testing.T) {
	v := make([]byte, 32)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), nil)
	tests := []struct {
		name    string
		key     *ecdsa.PrivateKey
		pcrs    []PCRValue
		comment string
		wantErr string
	}{
		{"no key", nil, []PCRValue{{7, v}}, "", "not an ECDSA P-256"},
		{"p384", p384, []PCRValue{{7, v}}, "", "not on curve P-256"},
		{"no pcrs", testPolicyKey(t, "e"), nil, "", "want 1 to 24 pcrs"},
		{"short value", testPolicyKey(t, "e"), []PCRValue{{7, v[:3]}}, "", "pcr 7 value: want 32 bytes"},
		{"bad comment", testPolicyKey(t, "e"), []PCRValue{{7, v}}, "a\x00", "comment: control character"},
	}
	for _, tt := range tests {
		if p, err := SignPolicy(tt.key, tt.pcrs, tt.comment, time.Now()); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: SignPolicy = %v, %v; want error containing %q", tt.name, p, err, tt.wantErr)
		}
	}
}

func TestFindSignedPolicy(t *testing.T) {
	b := testBlobKind(t, "find", testKinds[2]) // key "find", PCRs 0,7,14
	good := testSignedPolicy(t, "find", 0, 7, 14)
	current := good.PCRs
	otherKey := testSignedPolicy(t, "not find", 0, 7, 14)
	otherKey.PCRs, otherKey.Digest = current, good.Digest // same values, other signer
	otherValues := testSignedPolicy(t, "find", 0, 7, 14)
	otherValues.PCRs = testPCRs(testRand("elsewhere"), 0, 7, 14)
	forged := *good
	forged.S = flip(good.S, 0)
	tests := []struct {
		name     string
		policies []*SignedPolicy
		want     *SignedPolicy
	}{
		{"none", nil, nil},
		{"match", []*SignedPolicy{good}, good},
		{"match among others", []*SignedPolicy{otherKey, nil, good}, good},
		{"other key only", []*SignedPolicy{otherKey}, nil},
		{"forged signature", []*SignedPolicy{&forged}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindSignedPolicy(b, current, tt.policies)
			if tt.want != nil {
				if err != nil || got != tt.want {
					t.Fatalf("FindSignedPolicy = %v, %v; want the matching policy", got, err)
				}
				return
			}
			var mp *MissingPolicyError
			if !errors.Is(err, ErrNoSignedPolicy) || !errors.As(err, &mp) {
				t.Fatalf("FindSignedPolicy error = %v, want a MissingPolicyError", err)
			}
			key, _ := b.Policy.SignerKey()
			if !bytes.Equal(mp.Digest, good.Digest) || mp.KeyID != key.ID() || mp.Name != "find" {
				t.Errorf("MissingPolicyError %+v: want digest %x key %s", mp, good.Digest, key.ID())
			}
			for _, v := range current {
				if !strings.Contains(err.Error(), hex.EncodeToString(v.Value)) {
					t.Errorf("error %q does not name PCR %d's value", err, v.Index)
				}
			}
			if !strings.Contains(err.Error(), hex.EncodeToString(good.Digest)) {
				t.Errorf("error %q does not name the digest to sign", err)
			}
		})
	}
	if _, err := FindSignedPolicy(testBlob(t, "pcr"), current, nil); err == nil {
		t.Errorf("FindSignedPolicy of a PCR blob succeeded")
	}
}

func TestFormatPCRValues(t *testing.T) {
	got := FormatPCRValues([]PCRValue{{0, []byte{0xab, 0x01}}, {7, []byte{0}}}, "\n")
	if want := "0=ab01\n7=00"; got != want {
		t.Errorf("FormatPCRValues = %q, want %q", got, want)
	}
}

func TestStoreSignedPolicies(t *testing.T) {
	s := openTestStore(t)
	if entries, err := s.SignedPolicies(); err != nil || len(entries) != 0 {
		t.Fatalf("no policies directory: %v, %v", entries, err)
	}
	a, b := testSignedPolicy(t, "a", 0, 7), testSignedPolicy(t, "b", 7)
	pa, err := s.AddSignedPolicy(a)
	if err != nil {
		t.Fatal(err)
	}
	if pa != filepath.Join(s.Dir(), "policies", a.FileName()) {
		t.Errorf("path %s", pa)
	}
	if mode(t, s.PolicyDir()).Perm() != 0o700 || mode(t, pa).Perm() != 0o600 {
		t.Errorf("modes %v %v, want 0700 and 0600", mode(t, s.PolicyDir()), mode(t, pa))
	}
	before, _ := os.ReadFile(pa)
	if _, err := s.AddSignedPolicy(testSignedPolicy(t, "a", 0, 7)); !errors.Is(err, ErrExists) {
		t.Errorf("adding the same policy again: %v, want ErrExists", err)
	}
	if after, _ := os.ReadFile(pa); !bytes.Equal(before, after) {
		t.Errorf("an existing policy file was rewritten")
	}
	if _, err := s.AddSignedPolicy(b); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"zz-garbage.policy":  "not a policy",
		".hidden.policy":     "ignored",
		"README":             "ignored",
		".x.policy.1234.tmp": "ignored",
	} {
		if err := os.WriteFile(filepath.Join(s.PolicyDir(), name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := s.SignedPolicies()
	if err != nil {
		t.Fatal(err)
	}
	var valid []string
	var bad []string
	for _, e := range entries {
		if e.Err != nil {
			if !errors.Is(e.Err, ErrMalformedPolicy) {
				t.Errorf("%s: %v, want ErrMalformedPolicy", e.Path, e.Err)
			}
			bad = append(bad, filepath.Base(e.Path))
			continue
		}
		valid = append(valid, e.Policy.Comment)
	}
	slices.Sort(valid)
	if !slices.Equal(valid, []string{"a firmware", "b firmware"}) || !slices.Equal(bad, []string{"zz-garbage.policy"}) {
		t.Errorf("valid %v, bad %v", valid, bad)
	}
	// The identities' listing ignores the policies directory.
	ids, err := s.List()
	if err != nil || len(ids) != 0 {
		t.Errorf("List = %v, %v; want nothing", ids, err)
	}
}

// testStoreBlob writes the blob named name to s and returns it.
func testStoreBlob(t *testing.T, s *Store, name string) *Blob {
	t.Helper()
	b := testBlob(t, name)
	if err := s.Create(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReplaceChecked(t *testing.T) {
	newBlob := func(t *testing.T, name string) *Blob {
		b := testBlobPCRs(t, name, testPCRs(testRand("new "+name), 7))
		b.PublicKey = testBlob(t, name).PublicKey
		b.Comment = "resealed"
		return b
	}
	checkFail := errors.New("check says no")
	tests := []struct {
		name    string
		setup   func(t *testing.T, s *Store)
		check   func(*Blob) error
		wantErr error // nil: success
	}{
		{"success", nil, nil, nil},
		{"check fails", nil, func(*Blob) error { return checkFail }, checkFail},
		{"backup exists", func(t *testing.T, s *Store) {
			if err := os.WriteFile(s.BackupPath("work"), []byte("left by a crash"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil, ErrResealPending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t)
			testStoreBlob(t, s, "work")
			if tt.setup != nil {
				tt.setup(t, s)
			}
			before, _ := os.ReadFile(s.Path("work"))
			bakBefore, bakErr := os.ReadFile(s.BackupPath("work"))
			nb := newBlob(t, "work")
			var checked *Blob
			var backupDuringCheck []byte
			err := s.ReplaceChecked(nb, func(staged *Blob) error {
				checked = staged
				backupDuringCheck, _ = os.ReadFile(s.BackupPath("work"))
				if tt.check != nil {
					return tt.check(staged)
				}
				return nil
			})
			after, _ := os.ReadFile(s.Path("work"))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !blobsEqual(checked, nb) {
					t.Errorf("check was not given the new blob as written")
				}
				if !bytes.Equal(backupDuringCheck, before) {
					t.Errorf("during the check the backup did not hold the old blob")
				}
				if want := mustMarshal(t, nb); !bytes.Equal(after, want) {
					t.Errorf("NAME.sealed is not the new blob")
				}
				if _, err := os.Stat(s.BackupPath("work")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("backup left after a successful reseal: %v", err)
				}
				if pub, _ := os.ReadFile(filepath.Join(s.Dir(), "work.pub")); !bytes.Equal(pub, nb.AuthorizedKey()) {
					t.Errorf("work.pub = %q", pub)
				}
			} else {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				if !bytes.Equal(after, before) {
					t.Errorf("a failed reseal changed NAME.sealed")
				}
				bakAfter, bakAfterErr := os.ReadFile(s.BackupPath("work"))
				if !bytes.Equal(bakAfter, bakBefore) || (bakErr == nil) != (bakAfterErr == nil) {
					t.Errorf("a failed reseal changed the backup: before %q (%v), after %q (%v)", bakBefore, bakErr, bakAfter, bakAfterErr)
				}
			}
			// Nothing else is left behind.
			var names []string
			for _, n := range dirNames(t, s.Dir()) {
				if n != "work.sealed.bak" || bakErr != nil {
					names = append(names, n)
				}
			}
			if want := []string{"work.pub", "work.sealed"}; !slices.Equal(names, want) {
				t.Errorf("store holds %v, want %v", names, want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		s := openTestStore(t)
		if err := s.ReplaceChecked(newBlob(t, "none"), func(*Blob) error { return nil }); !errors.Is(err, ErrNotFound) {
			t.Errorf("error %v, want ErrNotFound", err)
		}
		if names := dirNames(t, s.Dir()); len(names) != 0 {
			t.Errorf("store holds %v", names)
		}
	})
	t.Run("ignored by List", func(t *testing.T) {
		s := openTestStore(t)
		testStoreBlob(t, s, "work")
		if err := os.WriteFile(s.BackupPath("work"), mustMarshal(t, testBlob(t, "work")), 0o600); err != nil {
			t.Fatal(err)
		}
		ids, err := s.List()
		if err != nil || len(ids) != 1 || ids[0].Name != "work" {
			t.Errorf("List = %+v, %v; want work only", ids, err)
		}
	})
}

// TestParsePolicyKeyPEM covers the public key files keygen reads.
func TestParsePolicyKeyPEM(t *testing.T) {
	k, err := NewPolicyKey(&testPolicyKey(t, "pem").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), nil)
	k384, err := x509.MarshalPKIXPublicKey(p384.Public())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"valid", k.PEM(), ""},
		{"garbage", []byte("hello"), "want exactly one PEM block"},
		{"private type", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), `PEM type "PRIVATE KEY"`},
		{"p384", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k384}), "not on curve P-256"},
		{"bad der", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}}), "asn1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicyKeyPEM(tt.data)
			if tt.wantErr == "" {
				if err != nil || !bytes.Equal(got.Name, k.Name) {
					t.Fatalf("ParsePolicyKeyPEM = %v, %v", got, err)
				}
				return
			}
			if !errors.Is(err, ErrNotPolicyKey) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want ErrNotPolicyKey containing %q", err, tt.wantErr)
			}
		})
	}
}
