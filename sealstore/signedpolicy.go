package sealstore

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/tpmpolicy"
	"github.com/icn/icn-agent/internal/wire"
)

// SignedPolicyVersion is the signed policy file format version this
// package reads and writes.
const SignedPolicyVersion = 1

// policyPreamble opens the binary content of every signed policy this
// package writes.
var policyPreamble = wire.Preamble{Magic: policyMagic, Version: SignedPolicyVersion}

const (
	// policyPEMType is the type of the PEM block of a signed policy file.
	policyPEMType = "ICN AGENT SIGNED PCR POLICY"
	// policyMagic opens the binary content of every signed policy.
	policyMagic = "icn-agent-signed-pcr-policy"
	// maxPolicyFile bounds a signed policy file, PEM armour included.
	maxPolicyFile = 16 << 10
	// policyDirName is the store subdirectory of signed policies.
	policyDirName = "policies"
	// policyExt is the file name suffix of a signed policy.
	policyExt = ".policy"
	// pointSize is the size of an uncompressed P-256 point.
	pointSize = 1 + 2*p256Size
)

var (
	// ErrMalformedPolicy is wrapped by every error reporting a signed
	// policy file that is not well-formed, or whose digest or signature
	// does not check.
	ErrMalformedPolicy = errors.New("sealstore: malformed signed policy")
	// ErrUnsupportedPolicyVersion is wrapped by the error
	// ParseSignedPolicy returns for a signed policy of another format
	// version. It does not wrap ErrMalformedPolicy.
	ErrUnsupportedPolicyVersion = errors.New("sealstore: unsupported signed policy version")
	// ErrNoSignedPolicy means no signed policy at hand approves the
	// current PCR values for a PolicyAuthorizedPCR blob. The error is a
	// *MissingPolicyError naming the digest and values to sign.
	ErrNoSignedPolicy = errors.New("sealstore: no signed policy approves the current PCR values")
)

// malformedPolicy returns an error wrapping ErrMalformedPolicy that names
// field.
func malformedPolicy(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedPolicy, field, fmt.Sprintf(format, args...))
}

// policyError maps an error of the wire.Reader of a signed policy to
// ErrMalformedPolicy or ErrUnsupportedPolicyVersion.
func policyError(err error) error {
	return wireError(err, ErrMalformedPolicy, ErrUnsupportedPolicyVersion, "signed policy")
}

// SignedPolicy is a PCR policy approved by a policy signing key: a
// TPM2_PolicyPCR digest over given PCR values, signed so that a TPM will
// accept it in TPM2_PolicyAuthorize for objects sealed to that key (see
// PolicyAuthorizedPCR). Several may coexist, one per acceptable platform
// state (old and new firmware, for example). See the package documentation
// for the file format.
type SignedPolicy struct {
	// Comment says what the values are, for people (for example the
	// firmware version); possibly empty.
	Comment string
	// Bank is the PCR bank, tpm2.TPMAlgSHA256.
	Bank tpm2.TPMIAlgHash
	// PCRs are the approved values, sorted by Index.
	PCRs []PCRValue
	// Digest is the approved policy: the PolicyPCR digest of PCRs.
	Digest []byte
	// Key is the key that signed it.
	Key *PolicyKey
	// R and S are the ECDSA signature, each a 32-byte big-endian
	// integer, over SHA256(Digest || policyRef) with an empty policyRef.
	R, S []byte
	// Signed is when it was signed, with one-second resolution.
	Signed time.Time
}

// SignPolicy signs the PolicyPCR policy over pcrs (SHA-256 bank, sorted,
// 32-byte values) with priv, an ECDSA P-256 key. The signature is
// deterministic (RFC 6979).
func SignPolicy(priv *ecdsa.PrivateKey, pcrs []PCRValue, comment string, signed time.Time) (*SignedPolicy, error) {
	if priv == nil {
		return nil, fmt.Errorf("%w: no key", ErrNotPolicyKey)
	}
	key, err := NewPolicyKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	p := &SignedPolicy{
		Comment: comment,
		Bank:    tpm2.TPMAlgSHA256,
		PCRs:    slices.Clone(pcrs),
		Key:     key,
		Signed:  signed.UTC().Truncate(time.Second),
	}
	if p.Digest, err = PolicyPCRDigest(p.Bank, p.PCRs); err != nil {
		return nil, err
	}
	der, err := priv.Sign(nil, tpmpolicy.ApprovalHash(p.Digest), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sealstore: sign policy: %w", err)
	}
	var sig struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &sig); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("sealstore: sign policy: bad ECDSA signature encoding")
	}
	p.R, p.S = sig.R.FillBytes(make([]byte, p256Size)), sig.S.FillBytes(make([]byte, p256Size))
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// validate applies the checks of the file format to p's fields, the
// signature included.
func (p *SignedPolicy) validate() error {
	if err := checkComment(p.Comment); err != nil {
		return malformedPolicy("comment", "%s", strings.TrimPrefix(trimPrefix(err), "malformed blob: comment: "))
	}
	pol := Policy{Kind: PolicyPCR, Bank: p.Bank, PCRs: p.PCRs, Digest: p.Digest}
	if err := pol.validate(); err != nil {
		// The same checks as a blob's PolicyPCR, reported as ours.
		return fmt.Errorf("%w: %s", ErrMalformedPolicy, strings.TrimPrefix(trimPrefix(err), "malformed blob: "))
	}
	if p.Key == nil {
		return malformedPolicy("policy key", "missing")
	}
	if len(p.R) != p256Size || len(p.S) != p256Size {
		return malformedPolicy("signature", "want r and s of %d bytes each, got %d and %d", p256Size, len(p.R), len(p.S))
	}
	r, s := new(big.Int).SetBytes(p.R), new(big.Int).SetBytes(p.S)
	if !ecdsa.Verify(p.Key.Public, tpmpolicy.ApprovalHash(p.Digest), r, s) {
		return malformedPolicy("signature", "does not verify with the policy key %s", p.Key.ID())
	}
	return nil
}

// TPMSignature returns the signature as a TPMT_SIGNATURE for
// TPM2_VerifySignature.
func (p *SignedPolicy) TPMSignature() tpm2.TPMTSignature {
	return tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: p.R},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: p.S},
		}),
	}
}

// Indexes returns the PCR indexes of the policy, ascending.
func (p *SignedPolicy) Indexes() []int {
	return Policy{PCRs: p.PCRs}.Indexes()
}

// FileName is the name of p's file in a store's policies directory:
// the approved policy digest and the key ID in hex, "DIGEST-KEYID.policy".
func (p *SignedPolicy) FileName() string {
	return hex.EncodeToString(p.Digest) + "-" + p.Key.ID() + policyExt
}

// Marshal checks p as ParseSignedPolicy would and returns its encoding as
// a PEM signed policy file. Errors wrap ErrMalformedPolicy.
func (p *SignedPolicy) Marshal() ([]byte, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil policy", ErrMalformedPolicy)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	var w cryptobyte.Builder
	policyPreamble.Add(&w)
	wire.AddString(&w, []byte(p.Comment))
	w.AddUint16(uint16(p.Bank))
	w.AddUint32(uint32(len(p.PCRs)))
	for _, v := range p.PCRs {
		w.AddUint8(byte(v.Index))
		wire.AddString(&w, v.Value)
	}
	wire.AddString(&w, p.Digest)
	wire.AddString(&w, p.Key.point())
	wire.AddString(&w, p.R)
	wire.AddString(&w, p.S)
	w.AddUint64(uint64(p.Signed.Unix()))
	body, err := w.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedPolicy, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: policyPEMType, Bytes: body}), nil
}

// ParseSignedPolicy parses and checks a signed policy file: its fields,
// that the digest is the PolicyPCR digest of the values, and that the
// signature verifies with the key it names. Errors wrap ErrMalformedPolicy,
// or ErrUnsupportedPolicyVersion for another format version.
func ParseSignedPolicy(data []byte) (*SignedPolicy, error) {
	if len(data) > maxPolicyFile {
		return nil, fmt.Errorf("%w: file too large: %d bytes, max %d", ErrMalformedPolicy, len(data), maxPolicyFile)
	}
	body, err := decodePEMBlock(data, policyPEMType, malformedPolicy)
	if err != nil {
		return nil, err
	}
	r := wire.NewReader(body)
	r.Preamble(policyPreamble)
	p := &SignedPolicy{Comment: string(r.String("comment", maxComment))}
	p.Bank = tpm2.TPMIAlgHash(r.Uint16("pcr bank"))
	count := r.Uint32("pcr count")
	if err := r.Err(); err != nil {
		return nil, policyError(err)
	}
	if count < 1 || count > maxPCRs {
		return nil, malformedPolicy("pcr count", "want 1 to %d, got %d", maxPCRs, count)
	}
	p.PCRs = make([]PCRValue, count)
	for i := range p.PCRs {
		idx := r.Uint8(fmt.Sprintf("pcr entry %d index", i))
		p.PCRs[i] = PCRValue{Index: int(idx), Value: bytes.Clone(r.String(fmt.Sprintf("pcr %d value", idx), maxDigest))}
	}
	p.Digest = bytes.Clone(r.String("policy digest", maxDigest))
	point := r.String("policy key", pointSize)
	if err := r.Err(); err != nil {
		return nil, policyError(err)
	}
	if p.Key, err = policyKeyFromPoint(point); err != nil {
		return nil, malformedPolicy("policy key", "%s", trimPrefix(err))
	}
	p.R = bytes.Clone(r.String("signature r", p256Size))
	p.S = bytes.Clone(r.String("signature s", p256Size))
	p.Signed = time.Unix(int64(r.Uint64("signed")), 0).UTC()
	r.End()
	if err := r.Err(); err != nil {
		return nil, policyError(err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// MissingPolicyError says that no signed policy approves the PCR values a
// PolicyAuthorizedPCR blob's PCRs hold now, and what to sign. It matches
// ErrNoSignedPolicy with errors.Is.
type MissingPolicyError struct {
	// Name is the identity's name.
	Name string
	// KeyID is the ID of the blob's policy key (PolicyKey.ID).
	KeyID string
	// PCRs are the current values of the blob's PCRs.
	PCRs []PCRValue
	// Digest is their PolicyPCR digest: the approved policy a signature
	// must cover.
	Digest []byte
}

func (e *MissingPolicyError) Error() string {
	return fmt.Sprintf("sealstore: %s: no policy signed by key %s approves the current PCR values (%s; policy digest %x); sign them with the policy key",
		e.Name, e.KeyID, FormatPCRValues(e.PCRs, ", "), e.Digest)
}

// Is makes errors.Is(err, ErrNoSignedPolicy) true.
func (e *MissingPolicyError) Is(target error) bool { return target == ErrNoSignedPolicy }

// FormatPCRValues formats PCR values as "N=HEX" items joined by sep: the
// lines "icn-agent policy sign --values FILE" reads, with sep "\n".
func FormatPCRValues(pcrs []PCRValue, sep string) string {
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = fmt.Sprintf("%d=%x", p.Index, p.Value)
	}
	return strings.Join(s, sep)
}

// FindSignedPolicy returns the policy among policies that b's signing key
// signed for the PCR values current (b's PCRs, in order), or a
// *MissingPolicyError. b must have a PolicyAuthorizedPCR policy.
func FindSignedPolicy(b *Blob, current []PCRValue, policies []*SignedPolicy) (*SignedPolicy, error) {
	if b.Policy.Kind != PolicyAuthorizedPCR {
		return nil, fmt.Errorf("sealstore: %s: not sealed to signed policies", b.Name)
	}
	key, err := parsePolicyKeyPublic(b.Policy.Signer)
	if err != nil {
		return nil, err
	}
	digest, err := PolicyPCRDigest(b.Policy.Bank, current)
	if err != nil {
		return nil, err
	}
	for _, p := range policies {
		if p != nil && p.Key != nil && bytes.Equal(p.Key.Name, key.Name) && bytes.Equal(p.Digest, digest) && p.validate() == nil {
			return p, nil
		}
	}
	return nil, &MissingPolicyError{Name: b.Name, KeyID: key.ID(), PCRs: current, Digest: digest}
}

// PolicyEntry is one file of a store's policies directory, as found by
// Store.SignedPolicies.
type PolicyEntry struct {
	// Path is the file's path.
	Path string
	// Policy is the parsed policy, nil if Err is set.
	Policy *SignedPolicy
	// Err is set if the file is unreadable or not a valid signed policy.
	Err error
}

// PolicyDir returns the directory of the store's signed policies,
// DIR/policies. It may not exist.
func (s *Store) PolicyDir() string {
	return filepath.Join(s.dir, policyDirName)
}

// AddSignedPolicy writes p to the store's policies directory (created,
// mode 0700, if missing) as p.FileName(), atomically, and returns its path.
// An existing file is never replaced: the error then wraps ErrExists (the
// same values were already signed with the same key).
func (s *Store) AddSignedPolicy(p *SignedPolicy) (string, error) {
	data, err := p.Marshal()
	if err != nil {
		return "", err
	}
	dir := s.PolicyDir()
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("sealstore: create policy directory: %w", err)
	}
	if _, err := checkDir(dir); err != nil {
		return "", err
	}
	d, err := openDir(dir)
	if err != nil {
		return "", err
	}
	defer d.Close()
	name := p.FileName()
	path := filepath.Join(dir, name)
	tmp, err := writeTemp(dir, name, data)
	if err != nil {
		return "", err
	}
	if err := renameNoReplace(int(d.Fd()), tmp, name); err != nil {
		_ = unix.Unlinkat(int(d.Fd()), tmp, 0)
		if errors.Is(err, ErrExists) {
			return "", &pathError{path, ErrExists}
		}
		return "", fmt.Errorf("sealstore: write %s: %w", path, err)
	}
	if err := d.Sync(); err != nil {
		return "", fmt.Errorf("sealstore: sync policy directory after writing %s: %w", path, err)
	}
	return path, nil
}

// SignedPolicies reads every NAME.policy file of the store's policies
// directory, sorted by file name. Hidden and temporary files and files of
// other names are ignored; a missing directory means no policies. A file
// that cannot be read or parsed is an entry with Err set.
func (s *Store) SignedPolicies() ([]PolicyEntry, error) {
	dir := s.PolicyDir()
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sealstore: list signed policies: %w", err)
	}
	var out []PolicyEntry
	for _, de := range des {
		name := de.Name()
		if !strings.HasSuffix(name, policyExt) || strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		p, err := loadPolicyFile(path)
		out = append(out, PolicyEntry{Path: path, Policy: p, Err: err})
	}
	return out, nil
}

// LoadSignedPolicy reads and parses the signed policy file at path.
func LoadSignedPolicy(path string) (*SignedPolicy, error) {
	return loadPolicyFile(path)
}

// loadPolicyFile reads a signed policy file as loadFile reads a blob
// (safefile: no FIFO, device or endless file; links followed, since a
// policy may be shared and linked in).
func loadPolicyFile(path string) (*SignedPolicy, error) {
	data, err := safefile.Read(path, maxPolicyFile)
	if err != nil {
		return nil, fileError(path, err, ErrMalformedPolicy, nil)
	}
	p, err := ParseSignedPolicy(data)
	if err != nil {
		return nil, &pathError{path, err}
	}
	return p, nil
}
