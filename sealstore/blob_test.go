package sealstore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/ssh"
)

// testRand returns a deterministic random source derived from label, so
// test blobs (and the committed fuzz corpus) are reproducible.
func testRand(label string) *rand.ChaCha8 {
	return rand.NewChaCha8(sha256.Sum256([]byte("sealstore test " + label)))
}

func randBytes(r *rand.ChaCha8, n int) []byte {
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// testSealedPublic returns the TPMT_PUBLIC of a sealed-data object bound to
// policy digest, as a TPM would return it from TPM2_Create.
func testSealedPublic(r *rand.ChaCha8, digest []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:        true,
			FixedParent:     true,
			NoDA:            true,
			AdminWithPolicy: true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: digest},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: randBytes(r, 32)}),
	}
}

// testPCRs returns SHA-256 PCR values for the given indexes.
func testPCRs(r *rand.ChaCha8, indexes ...int) []PCRValue {
	pcrs := make([]PCRValue, len(indexes))
	for i, idx := range indexes {
		pcrs[i] = PCRValue{Index: idx, Value: randBytes(r, 32)}
	}
	return pcrs
}

// testBlob returns a well-formed blob named name, with fake but
// structurally valid TPM parts. The same name gives the same blob.
func testBlob(t testing.TB, name string) *Blob {
	t.Helper()
	r := testRand(name)
	return testBlobPCRs(t, name, testPCRs(r, 0, 7, 14))
}

// testBlobPCRs is testBlob with the given PCR values.
func testBlobPCRs(t testing.TB, name string, pcrs []PCRValue) *Blob {
	t.Helper()
	r := testRand(name + " parts")
	pk, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(randBytes(r, ed25519.SeedSize)).Public())
	if err != nil {
		t.Fatal(err)
	}
	digest, err := PolicyPCRDigest(tpm2.TPMAlgSHA256, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	return &Blob{
		Name:      name,
		Comment:   name + "@test",
		PublicKey: pk,
		Policy: Policy{
			Kind:   PolicyPCR,
			Bank:   tpm2.TPMAlgSHA256,
			PCRs:   pcrs,
			Digest: digest,
		},
		SRKName: append([]byte{0x00, 0x0b}, randBytes(r, 32)...),
		Public:  tpm2.Marshal(tpm2.New2B(testSealedPublic(r, digest))),
		Private: tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: randBytes(r, 126)}),
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// mustMarshal marshals b or fails the test.
func mustMarshal(t testing.TB, b *Blob) []byte {
	t.Helper()
	data, err := b.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return data
}

// blobsEqual reports whether a and b hold the same data.
func blobsEqual(a, b *Blob) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name &&
		a.Comment == b.Comment &&
		bytes.Equal(a.PublicKey.Marshal(), b.PublicKey.Marshal()) &&
		reflect.DeepEqual(a.Policy, b.Policy) &&
		bytes.Equal(a.SRKName, b.SRKName) &&
		bytes.Equal(a.Public, b.Public) &&
		bytes.Equal(a.Private, b.Private) &&
		a.Created.Equal(b.Created)
}

func TestBlobRoundTrip(t *testing.T) {
	all := make([]int, 24)
	for i := range all {
		all[i] = i
	}
	tests := []struct {
		name   string
		modify func(*Blob)
	}{
		{"default", func(*Blob) {}},
		{"empty comment", func(b *Blob) { b.Comment = "" }},
		{"unicode comment", func(b *Blob) { b.Comment = "clé de Zoë — 鍵 🔑" }},
		{"max comment", func(b *Blob) { b.Comment = strings.Repeat("x", maxComment) }},
		{"max name", func(b *Blob) { b.Name = strings.Repeat("n", maxNameLen) }},
		{"one pcr", func(b *Blob) { *b = *testBlobPCRs(t, b.Name, testPCRs(testRand("one"), 23)) }},
		{"all pcrs", func(b *Blob) { *b = *testBlobPCRs(t, b.Name, testPCRs(testRand("all"), all...)) }},
		{"zero pcrs", func(b *Blob) {
			*b = *testBlobPCRs(t, b.Name, []PCRValue{{0, make([]byte, 32)}, {7, make([]byte, 32)}})
		}},
		{"epoch", func(b *Blob) { b.Created = time.Unix(0, 0) }},
		{"before epoch", func(b *Blob) { b.Created = time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"zero time", func(b *Blob) { b.Created = time.Time{} }},
		{"sub-second local time", func(b *Blob) {
			b.Created = time.Date(2030, 5, 6, 7, 8, 9, 999, time.FixedZone("X", 3600))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBlob(t, "rt")
			tt.modify(b)
			data := mustMarshal(t, b)
			got, err := ParseBlob(data)
			if err != nil {
				t.Fatalf("ParseBlob: %v", err)
			}
			want := *b
			want.Created = b.Created.Truncate(time.Second)
			if !blobsEqual(got, &want) {
				t.Errorf("round trip changed the blob:\n got %+v\nwant %+v", got, &want)
			}
			if got.Created.Location() != time.UTC {
				t.Errorf("Created location = %v, want UTC", got.Created.Location())
			}
			if again := mustMarshal(t, got); !bytes.Equal(again, data) {
				t.Errorf("Marshal(ParseBlob(data)) != data")
			}
		})
	}
}

func TestBlobMarshalFormat(t *testing.T) {
	data := mustMarshal(t, testBlob(t, "fmt"))
	block, rest := pem.Decode(data)
	if block == nil || len(rest) != 0 {
		t.Fatalf("Marshal output is not exactly one PEM block")
	}
	if block.Type != "ICN AGENT SEALED IDENTITY" || len(block.Headers) != 0 {
		t.Errorf("PEM type %q headers %v", block.Type, block.Headers)
	}
	want := "\x00\x00\x00\x19icn-agent-sealed-identity\x00\x00\x00\x01\x00\x00\x00\x03fmt"
	if !bytes.HasPrefix(block.Bytes, []byte(want)) {
		t.Errorf("body starts %q, want %q", block.Bytes[:len(want)], want)
	}
	created := binary.BigEndian.Uint64(block.Bytes[len(block.Bytes)-8:])
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Unix(); int64(created) != want {
		t.Errorf("created = %d, want %d", created, want)
	}
}

// rawPCR is one PCR entry of a rawBlob.
type rawPCR struct {
	index byte
	value []byte
}

// rawBlob is the binary content of a blob, field by field, with no checks,
// for building malformed blobs.
type rawBlob struct {
	magic    string
	version  uint32
	name     string
	comment  string
	key      []byte
	kind     byte
	bank     uint16
	count    *uint32 // nil: len(pcrs)
	pcrs     []rawPCR
	digest   []byte
	signer   []byte // written when the kind's low bits say PolicyAuthorizedPCR
	srk      []byte
	public   []byte
	private  []byte
	created  int64
	trailing []byte
}

func rawFromBlob(b *Blob) rawBlob {
	r := rawBlob{
		magic:   blobMagic,
		version: FormatVersion,
		name:    b.Name,
		comment: b.Comment,
		key:     b.PublicKey.Marshal(),
		kind:    b.Policy.kindByte(),
		bank:    uint16(b.Policy.Bank),
		digest:  b.Policy.Digest,
		signer:  b.Policy.Signer,
		srk:     b.SRKName,
		public:  b.Public,
		private: b.Private,
		created: b.Created.Unix(),
	}
	for _, p := range b.Policy.PCRs {
		r.pcrs = append(r.pcrs, rawPCR{byte(p.Index), p.Value})
	}
	return r
}

func (r rawBlob) body() []byte {
	var w []byte
	w = appendString(w, []byte(r.magic))
	w = binary.BigEndian.AppendUint32(w, r.version)
	w = appendString(w, []byte(r.name))
	w = appendString(w, []byte(r.comment))
	w = appendString(w, r.key)
	w = append(w, r.kind)
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
	if PolicyKind(r.kind&^pinFlag) == PolicyAuthorizedPCR {
		w = appendString(w, r.signer)
	}
	w = appendString(w, r.srk)
	w = appendString(w, r.public)
	w = appendString(w, r.private)
	w = binary.BigEndian.AppendUint64(w, uint64(r.created))
	return append(w, r.trailing...)
}

func armor(body []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: body})
}

// withDigest sets the policy digest and the public area's authPolicy to the
// PolicyPCR digest of r's PCRs, so that a change to the PCRs is otherwise
// consistent.
func (r *rawBlob) withDigest(t *testing.T) {
	t.Helper()
	var pcrs []PCRValue
	for _, p := range r.pcrs {
		pcrs = append(pcrs, PCRValue{int(p.index), p.value})
	}
	d, err := PolicyPCRDigest(tpm2.TPMAlgSHA256, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	r.digest = d
	r.public = tpm2.Marshal(tpm2.New2B(testSealedPublic(testRand("digest"), d)))
}

// withPublic replaces the public area by a modified sealed-data public area.
func (r *rawBlob) withPublic(modify func(*tpm2.TPMTPublic)) {
	pub := testSealedPublic(testRand("public"), r.digest)
	pub.ObjectAttributes.NoDA = r.kind&pinFlag == 0
	modify(&pub)
	r.public = tpm2.Marshal(tpm2.New2B(pub))
}

func u32(v uint32) *uint32 { return &v }

func TestParseBlobMalformed(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), testRand("ecdsa"))
	if err != nil {
		t.Fatal(err)
	}
	ecPub, err := ssh.NewPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		modify  func(*rawBlob)
		wantErr string // substring of the error
	}{
		{"bad magic", func(r *rawBlob) { r.magic = "icn-agent-sealed-identitx" }, "magic: not an icn-agent"},
		{"long magic", func(r *rawBlob) { r.magic = strings.Repeat("m", 65) }, "magic: length 65 exceeds"},
		{"empty name", func(r *rawBlob) { r.name = "" }, "name: bad identity name: empty"},
		{"bad name", func(r *rawBlob) { r.name = "../etc" }, `name: bad identity name "../etc": contains a character`},
		{"long name", func(r *rawBlob) { r.name = strings.Repeat("a", 65) }, "name: length 65 exceeds the maximum of 64"},
		{"comment newline", func(r *rawBlob) { r.comment = "a\nb" }, "comment: control character U+000A at byte 1"},
		{"comment C1 control", func(r *rawBlob) { r.comment = "a\u0085" }, "comment: control character U+0085"},
		{"comment DEL", func(r *rawBlob) { r.comment = "\x7f" }, "comment: control character U+007F"},
		{"comment bad utf-8", func(r *rawBlob) { r.comment = "a\xffb" }, "comment: not valid UTF-8"},
		{"comment too long", func(r *rawBlob) { r.comment = strings.Repeat("c", 1025) }, "comment: length 1025 exceeds the maximum of 1024"},
		{"key garbage", func(r *rawBlob) { r.key = []byte("garbage") }, "ssh public key: "},
		{"key empty", func(r *rawBlob) { r.key = nil }, "ssh public key: "},
		{"key ecdsa", func(r *rawBlob) { r.key = ecPub.Marshal() }, `ssh public key: type "ecdsa-sha2-nistp256", want "ssh-ed25519"`},
		{"key trailing", func(r *rawBlob) { r.key = append(r.key, 0) }, "ssh public key: ssh: trailing junk"},
		{"key short", func(r *rawBlob) { r.key = r.key[:len(r.key)-1] }, "ssh public key: "},
		{"policy kind 0", func(r *rawBlob) { r.kind = 0 }, "policy kind: 0 is not supported"},
		{"policy kind 3", func(r *rawBlob) { r.kind = 3 }, "policy kind: 3 is not supported"},
		{"bank sha1", func(r *rawBlob) { r.bank = uint16(tpm2.TPMAlgSHA1) }, "pcr bank: 0x0004 is not supported"},
		{"bank sha384", func(r *rawBlob) { r.bank = uint16(tpm2.TPMAlgSHA384) }, "pcr bank: 0x000c is not supported"},
		{"pcr count 0", func(r *rawBlob) { r.count = u32(0) }, "pcr count: want 1 to 24, got 0"},
		{"pcr count 25", func(r *rawBlob) { r.count = u32(25) }, "pcr count: want 1 to 24, got 25"},
		{"pcr count huge", func(r *rawBlob) { r.count = u32(0xffffffff) }, "pcr count: want 1 to 24, got 4294967295"},
		{"pcr count too high for data", func(r *rawBlob) { r.count = u32(4) }, "pcr 0 value: length"},
		{"pcr index 24", func(r *rawBlob) { r.pcrs[2].index = 24 }, "pcr entry 2 index: 24 out of range 0 to 23"},
		{"pcr index 255", func(r *rawBlob) { r.pcrs[2].index = 255 }, "pcr entry 2 index: 255 out of range"},
		{"pcr duplicate", func(r *rawBlob) { r.pcrs[1].index = 0 }, "pcr entry 1 index: 0 after 0"},
		{"pcr unsorted", func(r *rawBlob) { r.pcrs[0], r.pcrs[1] = r.pcrs[1], r.pcrs[0] }, "pcr entry 1 index: 0 after 7"},
		{"pcr value short", func(r *rawBlob) { r.pcrs[1].value = r.pcrs[1].value[:5] }, "pcr 7 value: want 32 bytes, got 5"},
		{"pcr value long", func(r *rawBlob) { r.pcrs[1].value = make([]byte, 48) }, "pcr 7 value: want 32 bytes, got 48"},
		{"pcr value huge", func(r *rawBlob) { r.pcrs[1].value = make([]byte, 65) }, "pcr 7 value: length 65 exceeds the maximum of 64"},
		{"pcr value changed", func(r *rawBlob) { r.pcrs[0].value = make([]byte, 32) }, "policy digest: does not match the pcr values"},
		{"digest short", func(r *rawBlob) { r.digest = r.digest[:31] }, "policy digest: want 32 bytes, got 31"},
		{"digest empty", func(r *rawBlob) { r.digest = nil }, "policy digest: want 32 bytes, got 0"},
		{"digest flipped", func(r *rawBlob) { r.digest = flip(r.digest, 3) }, "policy digest: does not match the pcr values"},
		{"srk name short", func(r *rawBlob) { r.srk = r.srk[:33] }, "srk name: want 34 bytes, got 33"},
		{"srk name long", func(r *rawBlob) { r.srk = append(r.srk, 0) }, "srk name: length 35 exceeds the maximum of 34"},
		{"srk name sha1", func(r *rawBlob) { r.srk[1] = 0x04 }, "srk name: name algorithm 0x0004"},
		{"public empty", func(r *rawBlob) { r.public = nil }, "tpm2b public: truncated size"},
		{"public size too big", func(r *rawBlob) { r.public[1]++ }, "tpm2b public: size field says"},
		{"public trailing", func(r *rawBlob) { r.public = append(r.public, 0) }, "tpm2b public: size field says"},
		{"public inner trailing", func(r *rawBlob) {
			r.public = append(r.public, 0)
			binary.BigEndian.PutUint16(r.public, uint16(len(r.public)-2))
		}, "tpm2b public: trailing bytes or non-canonical encoding"},
		{"public inner truncated", func(r *rawBlob) {
			r.public = r.public[:len(r.public)-1]
			binary.BigEndian.PutUint16(r.public, uint16(len(r.public)-2))
		}, "tpm2b public: "},
		{"public too long", func(r *rawBlob) { r.public = make([]byte, 1025) }, "tpm2b public: length 1025 exceeds the maximum of 1024"},
		{"public rsa", func(r *rawBlob) { r.public[3] = 0x01 }, "tpm2b public: not a SHA-256 keyedHash object"},
		{"public name alg sha1", func(r *rawBlob) { r.public[5] = 0x04 }, "tpm2b public: not a SHA-256 keyedHash object"},
		{"public hmac scheme", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) {
				p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
					Scheme: tpm2.TPMTKeyedHashScheme{
						Scheme:  tpm2.TPMAlgHMAC,
						Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
					},
				})
			})
		}, "tpm2b public: keyedHash scheme 0x0005"},
		{"public unique short", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) {
				p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 20)})
			})
		}, "tpm2b public: unique: want 32 bytes, got 20"},
		{"public fixedTPM clear", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false })
		}, "tpm2b public: attribute fixedTPM must be set"},
		{"public fixedParent clear", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false })
		}, "tpm2b public: attribute fixedParent must be set"},
		{"public noDA clear", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.NoDA = false })
		}, "tpm2b public: attribute noDA must be set"},
		{"public adminWithPolicy clear", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.AdminWithPolicy = false })
		}, "tpm2b public: attribute adminWithPolicy must be set"},
		{"public userWithAuth set", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true })
		}, "tpm2b public: attribute userWithAuth must be clear"},
		{"public sensitiveDataOrigin set", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = true })
		}, "tpm2b public: attribute sensitiveDataOrigin must be clear"},
		{"public sign set", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = true })
		}, "tpm2b public: attribute sign must be clear"},
		{"public decrypt set", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true })
		}, "tpm2b public: attribute decrypt must be clear"},
		{"public authPolicy other", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.AuthPolicy.Buffer = flip(p.AuthPolicy.Buffer, 0) })
		}, "tpm2b public: authPolicy does not match the policy digest"},
		{"public authPolicy empty", func(r *rawBlob) {
			r.withPublic(func(p *tpm2.TPMTPublic) { p.AuthPolicy.Buffer = nil })
		}, "tpm2b public: authPolicy does not match the policy digest"},
		{"private empty field", func(r *rawBlob) { r.private = nil }, "tpm2b private: truncated size"},
		{"private zero size", func(r *rawBlob) { r.private = []byte{0, 0} }, "tpm2b private: empty"},
		{"private size mismatch", func(r *rawBlob) { r.private = []byte{0, 5, 1, 2} }, "tpm2b private: size field says 5 bytes, 2 present"},
		{"private too long", func(r *rawBlob) {
			r.private = binary.BigEndian.AppendUint16(nil, 1023)
			r.private = append(r.private, make([]byte, 1023)...)
		}, "tpm2b private: length 1025 exceeds the maximum of 1024"},
		{"trailing byte", func(r *rawBlob) { r.trailing = []byte{0} }, "end: 1 trailing bytes"},
		{"trailing blob", func(r *rawBlob) { r.trailing = r.body() }, "trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawFromBlob(testBlob(t, "bad"))
			// Start from a copy whose slices the case may modify freely.
			r.public = bytes.Clone(r.public)
			r.srk = bytes.Clone(r.srk)
			tt.modify(&r)
			b, err := ParseBlob(armor(r.body()))
			if err == nil {
				t.Fatalf("ParseBlob succeeded, want error containing %q", tt.wantErr)
			}
			if b != nil {
				t.Errorf("ParseBlob returned a blob with error %v", err)
			}
			if !errors.Is(err, ErrMalformedBlob) {
				t.Errorf("error %v does not wrap ErrMalformedBlob", err)
			}
			if !strings.HasPrefix(err.Error(), "sealstore: malformed blob: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// flip returns a copy of b with the low bit of byte i flipped.
func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 1
	return b
}

func TestParseBlobErrorMessage(t *testing.T) {
	r := rawFromBlob(testBlob(t, "msg"))
	r.pcrs[1].value = r.pcrs[1].value[:5]
	_, err := ParseBlob(armor(r.body()))
	const want = "sealstore: malformed blob: pcr 7 value: want 32 bytes, got 5"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestParseBlobUnsupportedVersion(t *testing.T) {
	tests := []struct {
		version uint32
		want    string
	}{
		{0, "sealstore: unsupported blob version 0 (this icn-agent reads version 1)"},
		{2, "sealstore: unsupported blob version 2 (this icn-agent reads version 1)"},
		{0xffffffff, "sealstore: unsupported blob version 4294967295 (this icn-agent reads version 1)"},
	}
	for _, tt := range tests {
		r := rawFromBlob(testBlob(t, "version"))
		r.version = tt.version
		// Another version may lay out the rest differently.
		r.trailing = []byte("anything")
		_, err := ParseBlob(armor(r.body()))
		if !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("version %d: error = %v, want ErrUnsupportedVersion", tt.version, err)
			continue
		}
		if errors.Is(err, ErrMalformedBlob) {
			t.Errorf("version %d: error %v also wraps ErrMalformedBlob", tt.version, err)
		}
		if err.Error() != tt.want {
			t.Errorf("version %d: error = %q, want %q", tt.version, err, tt.want)
		}
	}
}

func TestParseBlobTruncated(t *testing.T) {
	body := rawFromBlob(testBlob(t, "trunc")).body()
	for n := range len(body) {
		_, err := ParseBlob(armor(body[:n]))
		if !errors.Is(err, ErrMalformedBlob) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("body cut to %d of %d bytes: error = %v, want truncated", n, len(body), err)
		}
	}
}

func TestParseBlobPEM(t *testing.T) {
	valid := mustMarshal(t, testBlob(t, "pem"))
	body := rawFromBlob(testBlob(t, "pem")).body()
	withHeader := pem.EncodeToMemory(&pem.Block{Type: pemType, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: body})
	tests := []struct {
		name    string
		data    []byte
		wantErr string // "" means valid
	}{
		{"valid", valid, ""},
		{"surrounding whitespace", append(append([]byte(" \n\t\r\n"), valid...), "\n\n  \t"...), ""},
		{"crlf", bytes.ReplaceAll(valid, []byte("\n"), []byte("\r\n")), ""},
		{"empty", nil, "pem: empty file"},
		{"whitespace only", []byte(" \n\t "), "pem: empty file"},
		{"not pem", []byte("hello"), "pem: data before the PEM block"},
		{"text before", append([]byte("x\n"), valid...), "pem: data before the PEM block"},
		{"text after", append(bytes.Clone(valid), "x\n"...), "pem: data after the PEM block"},
		{"two blocks", append(bytes.Clone(valid), valid...), "pem: want exactly one PEM block"},
		{"other type", pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: body}), `pem: type "OPENSSH PRIVATE KEY"`},
		{"headers", withHeader, "pem: unexpected PEM headers"},
		{"bad base64", bytes.Replace(valid, []byte("AAAA"), []byte("A!AA"), 1), "pem: no valid PEM block"},
		{"no end line", valid[:len(valid)-40], "pem: no valid PEM block"},
		{"too large", append(bytes.Clone(valid), bytes.Repeat([]byte(" "), maxFileSize)...), "file too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBlob(tt.data)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseBlob: %v", err)
				}
				if !blobsEqual(b, testBlob(t, "pem")) {
					t.Errorf("parsed blob differs")
				}
				return
			}
			if !errors.Is(err, ErrMalformedBlob) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want ErrMalformedBlob containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestParseBlobHugeLength checks that a length prefix of nearly 4 GiB is
// rejected without allocating it.
func TestParseBlobHugeLength(t *testing.T) {
	r := rawFromBlob(testBlob(t, "huge"))
	body := r.body()
	// The comment length prefix follows magic, version and name.
	off := 4 + len(blobMagic) + 4 + 4 + len(r.name)
	binary.BigEndian.PutUint32(body[off:], 0xfffffff0)
	data := armor(body)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ParseBlob(data)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformedBlob) || !strings.Contains(err.Error(), "comment: length 4294967280 exceeds the maximum of 1024") {
		t.Errorf("error = %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("ParseBlob allocated %d bytes", n)
	}
}

func TestMarshalValidates(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Blob)
		wantErr string
	}{
		{"bad name", func(b *Blob) { b.Name = "a/b" }, "name: "},
		{"comment newline", func(b *Blob) { b.Comment = "x\r" }, "comment: control character"},
		{"no public key", func(b *Blob) { b.PublicKey = nil }, "ssh public key: missing"},
		{"policy kind", func(b *Blob) { b.Policy.Kind = 0 }, "policy kind"},
		{"bank", func(b *Blob) { b.Policy.Bank = tpm2.TPMAlgSHA1 }, "pcr bank"},
		{"no pcrs", func(b *Blob) { b.Policy.PCRs = nil }, "pcr count: want 1 to 24, got 0"},
		{"negative index", func(b *Blob) { b.Policy.PCRs[0].Index = -1 }, "pcr entry 0 index: -1 out of range"},
		{"index 256", func(b *Blob) { b.Policy.PCRs[2].Index = 256 }, "pcr entry 2 index: 256 out of range"},
		{"unsorted", func(b *Blob) { b.Policy.PCRs[0], b.Policy.PCRs[1] = b.Policy.PCRs[1], b.Policy.PCRs[0] }, "pcr entry 1 index"},
		{"digest", func(b *Blob) { b.Policy.Digest = flip(b.Policy.Digest, 31) }, "policy digest"},
		{"srk name", func(b *Blob) { b.SRKName = nil }, "srk name: want 34 bytes, got 0"},
		{"public", func(b *Blob) { b.Public = nil }, "tpm2b public"},
		{"public too long", func(b *Blob) { b.Public = make([]byte, 2000) }, "tpm2b public: 2000 bytes, max 1024"},
		{"private", func(b *Blob) { b.Private = nil }, "tpm2b private"},
		{"private too long", func(b *Blob) { b.Private = make([]byte, 2000) }, "tpm2b private: 2000 bytes, max 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBlob(t, "marshal")
			tt.modify(b)
			data, err := b.Marshal()
			if err == nil {
				t.Fatalf("Marshal succeeded, want error containing %q", tt.wantErr)
			}
			if data != nil {
				t.Errorf("Marshal returned data with an error")
			}
			if !errors.Is(err, ErrMalformedBlob) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want ErrMalformedBlob containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := (*Blob)(nil).Marshal(); !errors.Is(err, ErrMalformedBlob) {
		t.Errorf("nil Blob: Marshal error = %v", err)
	}
}

func TestSealedPublic(t *testing.T) {
	b := testBlob(t, "pub")
	pub, err := b.SealedPublic()
	if err != nil {
		t.Fatal(err)
	}
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 {
		t.Errorf("type %v nameAlg %v", pub.Type, pub.NameAlg)
	}
	if !bytes.Equal(pub.AuthPolicy.Buffer, b.Policy.Digest) {
		t.Errorf("authPolicy %x, want %x", pub.AuthPolicy.Buffer, b.Policy.Digest)
	}
	if !bytes.Equal(tpm2.Marshal(tpm2.New2B(*pub)), b.Public) {
		t.Errorf("re-marshalled public area differs")
	}

	b.Public = b.Public[:10]
	if _, err := b.SealedPublic(); !errors.Is(err, ErrMalformedBlob) {
		t.Errorf("truncated public: error = %v", err)
	}
}

func TestAuthorizedKey(t *testing.T) {
	tests := []struct {
		name, comment, want string
	}{
		{"id1", "alice@laptop", "alice@laptop"},
		{"id2", "", "id2"},
		{"id3", "with spaces here", "with spaces here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBlob(t, tt.name)
			b.Comment = tt.comment
			line := b.AuthorizedKey()
			if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
				t.Errorf("line %q does not end in exactly one newline", line)
			}
			if !bytes.HasPrefix(line, []byte("ssh-ed25519 ")) {
				t.Errorf("line %q does not start with ssh-ed25519", line)
			}
			key, comment, _, rest, err := ssh.ParseAuthorizedKey(line)
			if err != nil {
				t.Fatal(err)
			}
			if len(rest) != 0 {
				t.Errorf("rest %q", rest)
			}
			if comment != tt.want {
				t.Errorf("comment %q, want %q", comment, tt.want)
			}
			if !bytes.Equal(key.Marshal(), b.PublicKey.Marshal()) {
				t.Errorf("key differs")
			}
		})
	}
	if got := (&Blob{Name: "x"}).AuthorizedKey(); got != nil {
		t.Errorf("AuthorizedKey without key = %q, want nil", got)
	}
}

func TestPolicyIndexes(t *testing.T) {
	tests := []struct {
		pcrs []PCRValue
		want []int
	}{
		{nil, []int{}},
		{[]PCRValue{{Index: 7}}, []int{7}},
		{[]PCRValue{{Index: 0}, {Index: 7}, {Index: 23}}, []int{0, 7, 23}},
	}
	for _, tt := range tests {
		if got := (Policy{PCRs: tt.pcrs}).Indexes(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Indexes(%v) = %v, want %v", tt.pcrs, got, tt.want)
		}
	}
}
