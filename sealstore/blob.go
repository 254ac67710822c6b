package sealstore

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/tpmpolicy"
	"github.com/icn/icn-agent/internal/wire"
)

// FormatVersion is the blob format version this package reads and writes.
const FormatVersion = 1

// pemType is the type of the PEM block of a blob file.
const pemType = "ICN AGENT SEALED IDENTITY"

// blobMagic opens the binary content of every blob.
const blobMagic = "icn-agent-sealed-identity"

// blobPreamble opens the binary content of every blob this package writes.
var blobPreamble = wire.Preamble{Magic: blobMagic, Version: FormatVersion}

// Size bounds. Lengths read from a blob are checked against these before
// anything is allocated.
const (
	// maxFileSize bounds a whole blob file, PEM armour included.
	maxFileSize = 64 << 10
	// maxComment bounds the comment, in bytes.
	maxComment = 1024
	// maxSSHKey bounds the SSH wire public key; an Ed25519 one is 51 bytes.
	maxSSHKey = 512
	// maxDigest bounds a PCR value or policy digest (SHA-512 size).
	maxDigest = 64
	// srkNameSize is the size of a SHA-256 TPM Name: alg id + digest.
	srkNameSize = 2 + sha256Size
	// maxTPM2B bounds the TPM2B_PUBLIC and TPM2B_PRIVATE fields.
	maxTPM2B = 1024
	// sha256Size is the size of a SHA-256 digest.
	sha256Size = 32
)

// ErrMalformedBlob is wrapped by every error reporting a blob that is not a
// well-formed version 1 blob (bad PEM, a field out of bounds or inconsistent,
// truncated or trailing data). It is also wrapped by [Blob.Marshal] errors
// about a Blob value that would not make a well-formed blob.
var ErrMalformedBlob = errors.New("sealstore: malformed blob")

// ErrUnsupportedVersion is wrapped by the error [ParseBlob] returns for a
// blob whose magic is right but whose version is not [FormatVersion],
// typically one written by a newer icn-agent. Such an error does not wrap
// [ErrMalformedBlob].
var ErrUnsupportedVersion = errors.New("sealstore: unsupported blob version")

// malformed returns an error wrapping ErrMalformedBlob that names field.
func malformed(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedBlob, field, fmt.Sprintf(format, args...))
}

// blobError maps an error of the wire.Reader of a blob to ErrMalformedBlob
// or ErrUnsupportedVersion.
func blobError(err error) error {
	return wireError(err, ErrMalformedBlob, ErrUnsupportedVersion, "sealed identity")
}

// wireError maps an error of a wire.Reader over a format called what to
// the format's sentinels: malformed, or unsupported for another version.
func wireError(err, malformed, unsupported error, what string) error {
	if v, ok := errors.AsType[*wire.VersionError](err); ok {
		return fmt.Errorf("%w %d (this icn-agent reads version %d)", unsupported, v.Version, v.Want)
	}
	if _, ok := errors.AsType[*wire.MagicError](err); ok {
		return fmt.Errorf("%w: magic: not an icn-agent %s", malformed, what)
	}
	return fmt.Errorf("%w: %w", malformed, err)
}

// PolicyKind says how a sealed object's authPolicy is built.
type PolicyKind uint8

const (
	// PolicyPCR is a TPM2_PolicyPCR from the empty policy: the object
	// unseals only while the selected PCRs hold the values recorded at
	// seal time.
	PolicyPCR PolicyKind = 1
	// PolicyAuthorizedPCR is a TPM2_PolicyAuthorize from the empty policy,
	// naming a policy signing key: the object unseals while the selected
	// PCRs hold values for which a PolicyPCR digest signed by that key is
	// presented (see SignedPolicy). No PCR value is fixed at seal time.
	PolicyAuthorizedPCR PolicyKind = 2
)

// pinFlag is the bit of the policy kind byte that says the policy ends in
// TPM2_PolicyAuthValue: the object also needs its PIN.
const pinFlag = 0x80

func (k PolicyKind) String() string {
	switch k {
	case PolicyPCR:
		return "PCR"
	case PolicyAuthorizedPCR:
		return "signed PCR"
	}
	return fmt.Sprintf("PolicyKind(%d)", uint8(k))
}

// PCRValue is one PCR's value recorded at seal time.
type PCRValue struct {
	// Index is the PCR number, 0 to 23.
	Index int
	// Value is the PCR's content in the policy's bank; nil in a
	// PolicyAuthorizedPCR policy, which selects PCRs without fixing
	// their values.
	Value []byte
}

// Policy is the authorization policy a sealed object is bound to.
type Policy struct {
	// Kind is the kind of policy: PolicyPCR or PolicyAuthorizedPCR.
	Kind PolicyKind
	// PIN is set when the policy ends in TPM2_PolicyAuthValue: unsealing
	// also needs the PIN the object was sealed with (see PINAuthValue),
	// and wrong PINs count towards the TPM's dictionary-attack lockout.
	PIN bool
	// Bank is the PCR bank, tpm2.TPMAlgSHA256.
	Bank tpm2.TPMIAlgHash
	// PCRs are the selected PCRs sorted by Index, with their values for
	// PolicyPCR, without (nil) for PolicyAuthorizedPCR.
	PCRs []PCRValue
	// Signer is the public area (a marshalled TPM2B_PUBLIC) of the
	// policy signing key of a PolicyAuthorizedPCR policy, in the form
	// PolicyKeyPublic makes; nil for PolicyPCR.
	Signer []byte
	// Digest is the policy digest, equal to the sealed object's
	// authPolicy; see PolicyDigest.
	Digest []byte
}

// HasValues reports whether the policy fixes PCR values at seal time
// (PolicyPCR). A PolicyAuthorizedPCR policy accepts any values its key
// signed.
func (p Policy) HasValues() bool { return p.Kind == PolicyPCR }

// Mismatch lists, ascending, the PCRs of a PolicyPCR policy whose value in
// current is known and differs from the value recorded at seal time. It is
// always empty for a PolicyAuthorizedPCR policy: whether its PCRs are
// acceptable depends on the signed policies at hand (see FindSignedPolicy).
func (p Policy) Mismatch(current map[int][]byte) []int {
	if !p.HasValues() {
		return nil
	}
	var out []int
	for _, pv := range p.PCRs {
		if v, ok := current[pv.Index]; ok && !bytes.Equal(v, pv.Value) {
			out = append(out, pv.Index)
		}
	}
	return out
}

// SignerKey returns the signing key of a PolicyAuthorizedPCR policy.
func (p Policy) SignerKey() (*PolicyKey, error) {
	if p.Kind != PolicyAuthorizedPCR {
		return nil, fmt.Errorf("sealstore: a %s policy has no signing key", p.Kind)
	}
	return parsePolicyKeyPublic(p.Signer)
}

// kindByte returns the policy kind byte of the file format.
func (p Policy) kindByte() byte {
	k := byte(p.Kind)
	if p.PIN {
		k |= pinFlag
	}
	return k
}

// Indexes returns the PCR indexes of the policy, ascending.
func (p Policy) Indexes() []int {
	idx := make([]int, len(p.PCRs))
	for i, v := range p.PCRs {
		idx[i] = v.Index
	}
	return idx
}

// Describe says for people what p needs: "PCRs 0,7", then " signed by key
// ID" for a PolicyAuthorizedPCR policy and ", PIN" if it needs one.
func (p Policy) Describe() string {
	s := "PCRs " + tpmpolicy.FormatList(p.Indexes())
	if k, err := p.SignerKey(); err == nil {
		s += " signed by key " + k.ID()
	}
	if p.PIN {
		s += ", PIN"
	}
	return s
}

// Blob is a sealed identity as stored on disk: everything needed to load the
// sealed seed into the TPM that sealed it, plus the public key and metadata
// needed to list the identity without the TPM. See the package
// documentation for the file format.
type Blob struct {
	// Name is the identity name; see ValidName.
	Name string
	// Comment is the key comment, possibly empty.
	Comment string
	// PublicKey is the Ed25519 public key (type ssh-ed25519).
	PublicKey ssh.PublicKey
	// Policy is the policy the sealed object is bound to.
	Policy Policy
	// SRKName is the TPM Name (TPM2B_NAME contents) of the parent SRK.
	SRKName []byte
	// Public is the marshalled TPM2B_PUBLIC of the sealed object.
	Public []byte
	// Private is the marshalled TPM2B_PRIVATE of the sealed object.
	Private []byte
	// Created is when the identity was sealed; it is stored with a
	// resolution of one second.
	Created time.Time
}

// Marshal checks b as ParseBlob would check a parsed blob and returns its
// encoding as a PEM blob file. Errors wrap ErrMalformedBlob.
func (b *Blob) Marshal() ([]byte, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil blob", ErrMalformedBlob)
	}
	if err := b.validate(); err != nil {
		return nil, err
	}
	var w cryptobyte.Builder
	blobPreamble.Add(&w)
	wire.AddString(&w, []byte(b.Name))
	wire.AddString(&w, []byte(b.Comment))
	wire.AddString(&w, b.PublicKey.Marshal())
	w.AddUint8(b.Policy.kindByte())
	w.AddUint16(uint16(b.Policy.Bank))
	w.AddUint32(uint32(len(b.Policy.PCRs)))
	for _, p := range b.Policy.PCRs {
		w.AddUint8(byte(p.Index))
		wire.AddString(&w, p.Value)
	}
	wire.AddString(&w, b.Policy.Digest)
	if b.Policy.Kind == PolicyAuthorizedPCR {
		wire.AddString(&w, b.Policy.Signer)
	}
	wire.AddString(&w, b.SRKName)
	wire.AddString(&w, b.Public)
	wire.AddString(&w, b.Private)
	w.AddUint64(uint64(b.Created.Unix()))
	body, err := w.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedBlob, err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: body})
	if len(out) > maxFileSize {
		// Unreachable with the field bounds above; kept so that the
		// writer can never produce a file the reader refuses.
		return nil, fmt.Errorf("%w: encoded blob is %d bytes, more than %d", ErrMalformedBlob, len(out), maxFileSize)
	}
	return out, nil
}

// ParseBlob parses and checks a blob file. Errors wrap ErrMalformedBlob, or
// ErrUnsupportedVersion for a blob of another format version.
func ParseBlob(data []byte) (*Blob, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: file too large: %d bytes, max %d", ErrMalformedBlob, len(data), maxFileSize)
	}
	body, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	r := wire.NewReader(body)
	r.Preamble(blobPreamble)
	name := r.String("name", maxNameLen)
	comment := r.String("comment", maxComment)
	keyBytes := r.String("ssh public key", maxSSHKey)
	kind := r.Uint8("policy kind")
	if err := r.Err(); err != nil {
		return nil, blobError(err)
	}
	b := &Blob{Name: string(name), Comment: string(comment)}
	if b.PublicKey, err = parseSSHKey(keyBytes); err != nil {
		return nil, err
	}
	b.Policy.Kind = PolicyKind(kind &^ pinFlag)
	b.Policy.PIN = kind&pinFlag != 0
	if k := b.Policy.Kind; k != PolicyPCR && k != PolicyAuthorizedPCR {
		// The rest of the layout depends on the kind.
		return nil, malformed("policy kind", "%d is not supported (want %d, PolicyPCR, or %d, PolicyAuthorizedPCR, optionally with the PIN bit 0x80)", kind, PolicyPCR, PolicyAuthorizedPCR)
	}
	b.Policy.Bank = tpm2.TPMIAlgHash(r.Uint16("pcr bank"))
	count := r.Uint32("pcr count")
	if err := r.Err(); err != nil {
		return nil, blobError(err)
	}
	if count < 1 || count > maxPCRs {
		return nil, malformed("pcr count", "want 1 to %d, got %d", maxPCRs, count)
	}
	b.Policy.PCRs = make([]PCRValue, count)
	for i := range b.Policy.PCRs {
		idx := r.Uint8(fmt.Sprintf("pcr entry %d index", i))
		// An empty value is none (nil), as in a signed PCR policy.
		val := bytes.Clone(r.String(fmt.Sprintf("pcr %d value", idx), maxDigest))
		if len(val) == 0 {
			val = nil
		}
		b.Policy.PCRs[i] = PCRValue{Index: int(idx), Value: val}
	}
	b.Policy.Digest = bytes.Clone(r.String("policy digest", maxDigest))
	if b.Policy.Kind == PolicyAuthorizedPCR {
		b.Policy.Signer = bytes.Clone(r.String("policy key", maxTPM2B))
	}
	b.SRKName = bytes.Clone(r.String("srk name", srkNameSize))
	b.Public = bytes.Clone(r.String("tpm2b public", maxTPM2B))
	b.Private = bytes.Clone(r.String("tpm2b private", maxTPM2B))
	b.Created = time.Unix(int64(r.Uint64("created")), 0).UTC()
	r.End()
	if err := r.Err(); err != nil {
		return nil, blobError(err)
	}
	if err := b.validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// decodePEM returns the content of the single PEM block data must consist
// of.
func decodePEM(data []byte) ([]byte, error) {
	return decodePEMBlock(data, pemType, malformed)
}

// decodePEMBlock is decodePEM for a block of type typ, reporting errors
// with bad.
func decodePEMBlock(data []byte, typ string, bad func(field, format string, args ...any) error) ([]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, bad("pem", "empty file")
	}
	// pem.Decode skips anything before a BEGIN line and, if a block is
	// malformed, silently moves on to the next one. Insisting that the
	// input starts with the only BEGIN line there is makes sure the block
	// decoded is the whole input.
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, bad("pem", "data before the PEM block")
	}
	if bytes.Count(trimmed, []byte("-----BEGIN ")) != 1 {
		return nil, bad("pem", "want exactly one PEM block")
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, bad("pem", "no valid PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, bad("pem", "data after the PEM block")
	}
	if block.Type != typ {
		return nil, bad("pem", "type %q, want %q", truncate(block.Type, 64), typ)
	}
	if len(block.Headers) != 0 {
		return nil, bad("pem", "unexpected PEM headers")
	}
	return block.Bytes, nil
}

// parseSSHKey parses an SSH wire public key and checks it is a canonically
// encoded ssh-ed25519 key.
func parseSSHKey(wire []byte) (ssh.PublicKey, error) {
	key, err := ssh.ParsePublicKey(wire)
	if err != nil {
		return nil, malformed("ssh public key", "%v", err)
	}
	if key.Type() != ssh.KeyAlgoED25519 {
		return nil, malformed("ssh public key", "type %q, want %q", truncate(key.Type(), 64), ssh.KeyAlgoED25519)
	}
	if !bytes.Equal(key.Marshal(), wire) {
		return nil, malformed("ssh public key", "non-canonical encoding")
	}
	return key, nil
}

// validate applies the checks of the file format to b's fields.
func (b *Blob) validate() error {
	if err := ValidName(b.Name); err != nil {
		return malformed("name", "%s", strings.TrimPrefix(err.Error(), "sealstore: "))
	}
	if err := checkComment(b.Comment); err != nil {
		return err
	}
	if b.PublicKey == nil {
		return malformed("ssh public key", "missing")
	}
	if _, err := parseSSHKey(b.PublicKey.Marshal()); err != nil {
		return err
	}
	if err := b.Policy.validate(); err != nil {
		return err
	}
	if len(b.SRKName) != srkNameSize {
		return malformed("srk name", "want %d bytes, got %d", srkNameSize, len(b.SRKName))
	}
	if alg := binary.BigEndian.Uint16(b.SRKName); alg != uint16(tpm2.TPMAlgSHA256) {
		return malformed("srk name", "name algorithm 0x%04x, want SHA-256 (0x%04x)", alg, uint16(tpm2.TPMAlgSHA256))
	}
	if _, err := checkPublic(b.Public, &b.Policy); err != nil {
		return err
	}
	return checkPrivate(b.Private)
}

func checkComment(c string) error {
	if len(c) > maxComment {
		return malformed("comment", "%d bytes, max %d", len(c), maxComment)
	}
	if !utf8.ValidString(c) {
		return malformed("comment", "not valid UTF-8")
	}
	for i, r := range c {
		if unicode.IsControl(r) {
			return malformed("comment", "control character %U at byte %d", r, i)
		}
	}
	return nil
}

// validate checks the policy's kind, bank, PCRs and signing key, and that
// Digest is the policy digest they make.
func (p *Policy) validate() error {
	if p.Kind != PolicyPCR && p.Kind != PolicyAuthorizedPCR {
		return malformed("policy kind", "%d is not supported (want %d, PolicyPCR, or %d, PolicyAuthorizedPCR)", p.Kind, PolicyPCR, PolicyAuthorizedPCR)
	}
	if p.Bank != tpm2.TPMAlgSHA256 {
		return malformed("pcr bank", "0x%04x is not supported (want SHA-256, 0x%04x)", uint16(p.Bank), uint16(tpm2.TPMAlgSHA256))
	}
	if n := len(p.PCRs); n < 1 || n > maxPCRs {
		return malformed("pcr count", "want 1 to %d, got %d", maxPCRs, n)
	}
	for i, v := range p.PCRs {
		if v.Index < 0 || v.Index >= maxPCRs {
			return malformed(fmt.Sprintf("pcr entry %d index", i), "%d out of range 0 to %d", v.Index, maxPCRs-1)
		}
		if i > 0 && v.Index <= p.PCRs[i-1].Index {
			return malformed(fmt.Sprintf("pcr entry %d index", i), "%d after %d, want strictly increasing", v.Index, p.PCRs[i-1].Index)
		}
		switch {
		case p.Kind == PolicyPCR && len(v.Value) != sha256Size:
			return malformed(fmt.Sprintf("pcr %d value", v.Index), "want %d bytes, got %d", sha256Size, len(v.Value))
		case p.Kind == PolicyAuthorizedPCR && v.Value != nil:
			return malformed(fmt.Sprintf("pcr %d value", v.Index), "want none in a signed PCR policy, got %d bytes", len(v.Value))
		}
	}
	switch {
	case p.Kind == PolicyPCR && p.Signer != nil:
		return malformed("policy key", "only a signed PCR policy has one")
	case p.Kind == PolicyAuthorizedPCR:
		if _, err := parsePolicyKeyPublic(p.Signer); err != nil {
			return err
		}
	}
	want, err := PolicyDigest(*p)
	if err != nil {
		// Unreachable after the checks above.
		return malformed("policy digest", "%s", strings.TrimPrefix(err.Error(), "sealstore: "))
	}
	if len(p.Digest) != len(want) {
		return malformed("policy digest", "want %d bytes, got %d", len(want), len(p.Digest))
	}
	if !bytes.Equal(p.Digest, want) {
		if p.Kind == PolicyPCR {
			return malformed("policy digest", "does not match the pcr values")
		}
		return malformed("policy digest", "does not match the policy key")
	}
	return nil
}

// Header of a sealed-data TPMT_PUBLIC: type TPM_ALG_KEYEDHASH, nameAlg
// TPM_ALG_SHA256. checkPublic checks it before handing the bytes to the
// reflection-based TPM unmarshaller, so that only this simple structure
// ever reaches it.
var sealedPublicHeader = []byte{
	byte(tpm2.TPMAlgKeyedHash >> 8), byte(tpm2.TPMAlgKeyedHash),
	byte(tpm2.TPMAlgSHA256 >> 8), byte(tpm2.TPMAlgSHA256),
}

// checkPublic decodes a marshalled TPM2B_PUBLIC and checks that it is a
// sealed-data object bound to policy p: authPolicy p.Digest, and noDA set
// unless p needs a PIN.
func checkPublic(pub2b []byte, p *Policy) (*tpm2.TPMTPublic, error) {
	const field = "tpm2b public"
	if len(pub2b) > maxTPM2B {
		return nil, malformed(field, "%d bytes, max %d", len(pub2b), maxTPM2B)
	}
	if len(pub2b) < 2 {
		return nil, malformed(field, "truncated size")
	}
	inner := pub2b[2:]
	if size := int(binary.BigEndian.Uint16(pub2b)); size != len(inner) {
		return nil, malformed(field, "size field says %d bytes, %d present", size, len(inner))
	}
	if !bytes.HasPrefix(inner, sealedPublicHeader) {
		return nil, malformed(field, "not a SHA-256 keyedHash object")
	}
	tpm2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pub2b)
	if err != nil {
		return nil, malformed(field, "%v", err)
	}
	pub, err := tpm2b.Contents()
	if err != nil {
		return nil, malformed(field, "%v", err)
	}
	// The TPM unmarshaller ignores trailing bytes; re-marshalling and
	// comparing catches them and any other non-canonical encoding.
	if re, err := marshalPublic(pub); err != nil || !bytes.Equal(re, inner) {
		return nil, malformed(field, "trailing bytes or non-canonical encoding")
	}

	params, err := pub.Parameters.KeyedHashDetail()
	if err != nil {
		return nil, malformed(field, "%v", err)
	}
	if params.Scheme.Scheme != tpm2.TPMAlgNull {
		return nil, malformed(field, "keyedHash scheme 0x%04x, want TPM_ALG_NULL for sealed data", uint16(params.Scheme.Scheme))
	}
	unique, err := pub.Unique.KeyedHash()
	if err != nil {
		return nil, malformed(field, "%v", err)
	}
	if len(unique.Buffer) != sha256Size {
		return nil, malformed(field, "unique: want %d bytes, got %d", sha256Size, len(unique.Buffer))
	}
	a := pub.ObjectAttributes
	for _, c := range []struct {
		name      string
		got, want bool
	}{
		{"fixedTPM", a.FixedTPM, true},
		{"fixedParent", a.FixedParent, true},
		{"noDA", a.NoDA, !p.PIN},
		{"adminWithPolicy", a.AdminWithPolicy, true},
		{"userWithAuth", a.UserWithAuth, false},
		{"sensitiveDataOrigin", a.SensitiveDataOrigin, false},
		{"sign", a.SignEncrypt, false},
		{"decrypt", a.Decrypt, false},
	} {
		if c.got != c.want {
			state := "clear"
			if c.want {
				state = "set"
			}
			return nil, malformed(field, "attribute %s must be %s", c.name, state)
		}
	}
	if !bytes.Equal(pub.AuthPolicy.Buffer, p.Digest) {
		return nil, malformed(field, "authPolicy does not match the policy digest")
	}
	return pub, nil
}

// marshalPublic is tpm2.Marshal turning its panic on unmarshallable input
// into an error, so that no input can crash a caller.
func marshalPublic(pub *tpm2.TPMTPublic) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("marshal: %v", r)
		}
	}()
	return tpm2.Marshal(pub), nil
}

// checkPrivate checks a marshalled TPM2B_PRIVATE.
func checkPrivate(priv []byte) error {
	const field = "tpm2b private"
	if len(priv) > maxTPM2B {
		return malformed(field, "%d bytes, max %d", len(priv), maxTPM2B)
	}
	if len(priv) < 2 {
		return malformed(field, "truncated size")
	}
	if size := int(binary.BigEndian.Uint16(priv)); size != len(priv)-2 {
		return malformed(field, "size field says %d bytes, %d present", size, len(priv)-2)
	}
	p, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](priv)
	if err != nil {
		return malformed(field, "%v", err)
	}
	if len(p.Buffer) == 0 {
		return malformed(field, "empty")
	}
	return nil
}

// SealedPublic returns the decoded public area of the sealed object, after
// checking it as ParseBlob does.
func (b *Blob) SealedPublic() (*tpm2.TPMTPublic, error) {
	return checkPublic(b.Public, &b.Policy)
}

// AuthorizedKey returns the public key as an authorized_keys line ending in
// a newline, with the comment, or the name if the comment is empty. It
// returns nil if b has no public key.
func (b *Blob) AuthorizedKey() []byte {
	if b == nil || b.PublicKey == nil {
		return nil
	}
	line := bytes.TrimSuffix(ssh.MarshalAuthorizedKey(b.PublicKey), []byte("\n"))
	comment := b.Comment
	if comment == "" {
		comment = b.Name
	}
	if comment != "" {
		line = append(line, ' ')
		line = append(line, comment...)
	}
	return append(line, '\n')
}

// truncate shortens s for inclusion in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
