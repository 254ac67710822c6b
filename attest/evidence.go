package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/wire"
)

// Version is the evidence format version this package writes. It reads
// version 1 too: evidence without the sealed object's policy description.
const Version = 2

// Format is the magic string that opens the SSH encoding of version 2
// evidence and the value of the "format" member of its JSON encoding.
const Format = "icn-agent-evidence-v2"

// formatV1 is the magic string of version 1 evidence.
const formatV1 = "icn-agent-evidence-v1"

// The preambles of the SSH encoding: the magic names the version too.
var (
	preamble   = wire.Preamble{Magic: Format, Version: Version}
	preambleV1 = wire.Preamble{Magic: formatV1, Version: 1}
)

// formatOf returns the magic string of a format version.
func formatOf(version int) string {
	if version == 1 {
		return formatV1
	}
	return Format
}

// PolicyKind says how a sealed object's authPolicy is built, as the
// evidence describes it (see Evidence.PolicyKind).
type PolicyKind uint8

// The policy kinds of sealed identities; the values are those of the
// sealstore blob format.
const (
	// PolicyUnknown is version 1 evidence, which does not say: Verify
	// then checks for a plain PolicyPCR policy.
	PolicyUnknown PolicyKind = 0
	// PolicyPCR is TPM2_PolicyPCR over the values at seal time.
	PolicyPCR PolicyKind = 1
	// PolicyAuthorizedPCR is TPM2_PolicyAuthorize by a policy key that
	// approves PCR values by signing their PolicyPCR digest.
	PolicyAuthorizedPCR PolicyKind = 2
)

// String returns the kind's name in the JSON encoding.
func (k PolicyKind) String() string {
	switch k {
	case PolicyUnknown:
		return "unknown"
	case PolicyPCR:
		return "pcr"
	case PolicyAuthorizedPCR:
		return "authorized-pcr"
	}
	return fmt.Sprintf("PolicyKind(%d)", uint8(k))
}

// Describe names the kind for people, as reports print it: "PCR policy"
// or "signed PCR policy", with " with PIN" when pin is set. Version 1
// evidence (PolicyUnknown) has a plain PCR policy.
func (k PolicyKind) Describe(pin bool) string {
	s := "PCR policy"
	if k == PolicyAuthorizedPCR {
		s = "signed PCR policy"
	}
	if pin {
		s += " with PIN"
	}
	return s
}

func parsePolicyKind(s string) (PolicyKind, error) {
	for _, k := range []PolicyKind{PolicyPCR, PolicyAuthorizedPCR} {
		if s == k.String() {
			return k, nil
		}
	}
	return 0, malformed("policy kind", "unknown kind %q", s)
}

// Nonce size bounds: a verifier's challenge must be 8 to 64 bytes.
const (
	MinNonceSize = 8
	MaxNonceSize = 64
)

// Domain separation strings of Binding and PossessionMessage.
const (
	bindingDomain    = "icn-agent quote v1\x00"
	possessionDomain = "icn-agent possession v1\x00"
)

// Size bounds of evidence fields, checked before anything is allocated.
const (
	maxEvidence    = 64 << 10 // a whole SSH encoding
	maxAttest      = 1024     // TPMS_ATTEST
	maxSignature   = 512      // TPMT_SIGNATURE
	maxTPM2BPublic = 1024     // TPM2B_PUBLIC
	maxName        = 2 + 64   // TPM2B_NAME contents
	maxPCRValue    = 64       // a PCR value (SHA-512 size)
	maxIdentityKey = 512      // SSH wire public key
	maxPossession  = 128      // Ed25519 signature (64 bytes)
)

// Binding returns the qualifyingData of the quote and of the certification
// of the sealed object: what ties them to the verifier's nonce and to the
// identity key they are about.
//
//	SHA-256("icn-agent quote v1\x00" || uint32(len(nonce)) || nonce || uint32(len(keywire)) || keywire)
//
// where keywire is the SSH wire encoding of key (RFC 4253 6.6; for
// ssh-ed25519, RFC 8709) and lengths are big-endian. The TPM copies it
// into TPMS_ATTEST.extraData, so tpm2_checkquote must be given the hex of
// Binding, not the raw nonce, as its -q argument.
func Binding(nonce []byte, key ssh.PublicKey) []byte {
	var keywire []byte
	if key != nil {
		keywire = key.Marshal()
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte(bindingDomain))
	wire.AddString(&b, nonce)
	wire.AddString(&b, keywire)
	d := sha256.Sum256(b.BytesOrPanic())
	return d[:]
}

// PossessionMessage returns what the identity key signs to prove that the
// holder of its private key took part in this quote:
//
//	"icn-agent possession v1\x00" || uint32(len(nonce)) || nonce || uint32(len(quoted)) || quoted
//
// quoted is the TPMS_ATTEST of the quote exactly as the TPM signed it
// (Evidence.Attest), lengths are big-endian, and the message is signed as
// is with Ed25519 (no pre-hash). The message cannot be mistaken for an SSH
// user-authentication payload (which starts with a length-prefixed session
// identifier: "icn-" read as a length is over 1.7 GB) nor for an SSHSIG
// blob (which starts with "SSHSIG").
func PossessionMessage(nonce, quoted []byte) []byte {
	b := cryptobyte.NewBuilder(make([]byte, 0, len(possessionDomain)+8+len(nonce)+len(quoted)))
	b.AddBytes([]byte(possessionDomain))
	wire.AddString(b, nonce)
	wire.AddString(b, quoted)
	return b.BytesOrPanic()
}

// Evidence is what a verifier receives: a TPM quote of the PCRs bound to a
// nonce and an identity key, the TPM's certification that the identity's
// sealed object is loaded under its storage root key, and the identity's
// proof of possession. See the package documentation for what it proves
// and Verify for how it is checked.
//
// Evidence is plain data. ParseSSH and UnmarshalJSON check its structure;
// only Verify checks what it says.
type Evidence struct {
	// Version is the format version, 2 (or 1 for old evidence).
	Version int
	// Attest is the TPMS_ATTEST of TPM2_Quote, exactly as the TPM signed it.
	Attest []byte
	// Signature is the AK's signature over Attest, a marshalled
	// TPMT_SIGNATURE (ECDSA with SHA-256).
	Signature []byte
	// Bank is the PCR bank quoted: tpm2.TPMAlgSHA256.
	Bank tpm2.TPMIAlgHash
	// PCRs are the quoted PCR indexes, strictly ascending, 0 to 23.
	PCRs []int
	// PCRValues are the values of PCRs, in the same order.
	PCRValues [][]byte
	// AKPublic is the attestation key's marshalled TPM2B_PUBLIC.
	AKPublic []byte
	// CertifyAttest is the TPMS_ATTEST (type TPM_ST_ATTEST_SESSION_AUDIT)
	// of TPM2_GetSessionAuditDigest over an audit session in which the TPM
	// ran TPM2_ReadPublic on the loaded sealed object: the TPM's signed
	// statement that an object with public area SealedPublic is loaded
	// under the storage root key SRKName. Empty if the TPM refused (see
	// ErrNoCertify). The package documentation explains why this is not a
	// TPM2_Certify.
	CertifyAttest []byte
	// CertifySignature is the AK's signature over CertifyAttest, a
	// marshalled TPMT_SIGNATURE; empty with it.
	CertifySignature []byte
	// SealedPublic is the sealed object's marshalled TPM2B_PUBLIC, as the
	// TPM returned it.
	SealedPublic []byte
	// SRKName is the TPM Name of the storage root key, the parent of the
	// AK and of the sealed object.
	SRKName []byte
	// SealedPCRs are the PCRs the sealed object's policy covers (a subset
	// of PCRs). They are a hint, not authenticated: Verify uses them to
	// decide Result.SealedPolicyMatches, which a wrong hint can only make
	// false, never true.
	SealedPCRs []int
	// PolicyKind describes the sealed object's policy (version 2; zero in
	// version 1). Like SealedPCRs, it and the fields below are hints, not
	// authenticated: Verify computes the authPolicy they describe and
	// compares it with the certified one, so a wrong hint can only make
	// Result.SealedPolicyMatches false, never true.
	PolicyKind PolicyKind
	// PolicyPIN is set when the policy ends in TPM2_PolicyAuthValue (the
	// identity also needs its PIN).
	PolicyPIN bool
	// PolicySigner is the policy key's marshalled TPM2B_PUBLIC, for
	// PolicyAuthorizedPCR; empty otherwise.
	PolicySigner []byte
	// ApprovedPolicy is the PolicyPCR digest the policy key approved for
	// the quoted values of SealedPCRs, for PolicyAuthorizedPCR; empty when
	// the agent has no approval of these values (the identity then does
	// not unseal).
	ApprovedPolicy []byte
	// Approval is the policy key's signature over
	// SHA256(ApprovedPolicy), a marshalled TPMT_SIGNATURE (ECDSA with
	// SHA-256); empty with ApprovedPolicy.
	Approval []byte
	// IdentityKey is the identity's public key in SSH wire encoding
	// (ssh-ed25519).
	IdentityKey []byte
	// Possession is the identity key's raw 64-byte Ed25519 signature over
	// PossessionMessage(nonce, Attest).
	Possession []byte
}

// validate checks the structure of e: version, sizes, ranges and
// consistency between fields. It does not check what the fields say.
func (e *Evidence) validate() error {
	if e == nil {
		return fmt.Errorf("%w: no evidence", ErrMalformed)
	}
	if e.Version != Version && e.Version != 1 {
		return fmt.Errorf("%w %d (this icn-agent reads versions 1 and %d)", ErrUnsupportedVersion, e.Version, Version)
	}
	for _, f := range []struct {
		name     string
		b        []byte
		max      int
		required bool
	}{
		{"attest", e.Attest, maxAttest, true},
		{"signature", e.Signature, maxSignature, true},
		{"ak public", e.AKPublic, maxTPM2BPublic, true},
		{"certify attest", e.CertifyAttest, maxAttest, false},
		{"certify signature", e.CertifySignature, maxSignature, false},
		{"sealed public", e.SealedPublic, maxTPM2BPublic, false},
		{"srk name", e.SRKName, maxName, false},
		{"identity key", e.IdentityKey, maxIdentityKey, true},
		{"possession", e.Possession, maxPossession, true},
		{"policy signer", e.PolicySigner, maxTPM2BPublic, false},
		{"approved policy", e.ApprovedPolicy, maxName, false},
		{"approval", e.Approval, maxSignature, false},
	} {
		if len(f.b) > f.max {
			return malformed(f.name, "%d bytes, more than %d", len(f.b), f.max)
		}
		if f.required && len(f.b) == 0 {
			return malformed(f.name, "missing")
		}
	}
	if (len(e.CertifyAttest) == 0) != (len(e.CertifySignature) == 0) {
		return malformed("certify signature", "certify attest and signature must be both present or both absent")
	}
	if err := e.validatePolicy(); err != nil {
		return err
	}
	if len(e.PCRs) == 0 || len(e.PCRs) > numPCRs {
		return malformed("pcrs", "%d PCRs, want 1 to %d", len(e.PCRs), numPCRs)
	}
	if len(e.PCRValues) != len(e.PCRs) {
		return malformed("pcr values", "%d values for %d PCRs", len(e.PCRValues), len(e.PCRs))
	}
	if err := ascending("pcrs", e.PCRs); err != nil {
		return err
	}
	for i, v := range e.PCRValues {
		if len(v) == 0 || len(v) > maxPCRValue {
			return malformed("pcr values", "PCR %d value is %d bytes, want 1 to %d", e.PCRs[i], len(v), maxPCRValue)
		}
	}
	if len(e.SealedPCRs) > numPCRs {
		return malformed("sealed pcrs", "%d PCRs, more than %d", len(e.SealedPCRs), numPCRs)
	}
	if err := ascending("sealed pcrs", e.SealedPCRs); err != nil {
		return err
	}
	if quoted := maskOf(e.PCRs); maskOf(e.SealedPCRs)&^quoted != 0 {
		return malformed("sealed pcrs", "PCR %s not quoted", joinInts(indexesOf(maskOf(e.SealedPCRs)&^quoted)))
	}
	return nil
}

// validatePolicy checks that the policy description fits its kind.
func (e *Evidence) validatePolicy() error {
	if e.Version == 1 {
		if e.PolicyKind != PolicyUnknown || e.PolicyPIN || e.PolicySigner != nil || e.ApprovedPolicy != nil || e.Approval != nil {
			return malformed("policy", "version 1 evidence has no policy description")
		}
		return nil
	}
	switch e.PolicyKind {
	case PolicyPCR:
		if e.PolicySigner != nil || e.ApprovedPolicy != nil || e.Approval != nil {
			return malformed("policy", "a pcr policy has no signer or approval")
		}
	case PolicyAuthorizedPCR:
		if e.PolicySigner == nil {
			return malformed("policy signer", "missing for an authorized-pcr policy")
		}
		if (e.ApprovedPolicy == nil) != (e.Approval == nil) {
			return malformed("approval", "approved policy and approval must be both present or both absent")
		}
	default:
		return malformed("policy kind", "%d is not a policy kind", uint8(e.PolicyKind))
	}
	return nil
}

// ascending checks that indexes are strictly ascending PCR numbers.
func ascending(field string, indexes []int) error {
	for i, p := range indexes {
		if p < 0 || p >= numPCRs {
			return malformed(field, "PCR %d out of range 0 to %d", p, numPCRs-1)
		}
		if i > 0 && p <= indexes[i-1] {
			return malformed(field, "PCR %d after %d: want strictly ascending", p, indexes[i-1])
		}
	}
	return nil
}

// MarshalSSH returns the SSH wire encoding of e, used by the agent protocol
// extension. Integers are big-endian uint32 and "string" is a uint32 length
// followed by that many bytes (RFC 4251 5):
//
//	string  "icn-agent-evidence-v2"
//	uint32  version (2)
//	string  attest             TPMS_ATTEST of the quote
//	string  signature          TPMT_SIGNATURE
//	uint32  bank               TPM_ALG_ID (0x000B)
//	uint32  n                  number of quoted PCRs, 1 to 24
//	        n times:
//	uint32    index            strictly ascending, 0 to 23
//	string    value
//	string  ak public          TPM2B_PUBLIC
//	string  certify attest     TPMS_ATTEST of the session audit (may be empty)
//	string  certify signature  TPMT_SIGNATURE (empty with certify attest)
//	string  sealed public      TPM2B_PUBLIC (may be empty)
//	string  srk name           TPM2B_NAME contents (may be empty)
//	uint32  m                  number of sealing PCRs, 0 to 24
//	        m times:
//	uint32    index            strictly ascending, each one of the quoted PCRs
//	uint32  policy kind        1 PolicyPCR, 2 PolicyAuthorizedPCR
//	uint32  pin                0 or 1: the policy ends in TPM2_PolicyAuthValue
//	string  policy signer      TPM2B_PUBLIC of the policy key (kind 2), else empty
//	string  approved policy    PolicyPCR digest the key approved (kind 2; may be empty)
//	string  approval           TPMT_SIGNATURE over SHA256(approved policy), empty with it
//	string  identity key       SSH wire public key
//	string  possession         Ed25519 signature
//
// Version 1 ("icn-agent-evidence-v1", version 1) has no policy fields:
// the identity key follows the sealing PCRs. Nothing follows. ParseSSH reverses it. MarshalSSH encodes e as it is;
// for evidence that ParseSSH, UnmarshalJSON or Quote returned,
// ParseSSH(e.MarshalSSH()) equals e.
func (e *Evidence) MarshalSSH() []byte {
	var w cryptobyte.Builder
	wire.Preamble{Magic: formatOf(e.Version), Version: uint32(e.Version)}.Add(&w)
	wire.AddString(&w, e.Attest)
	wire.AddString(&w, e.Signature)
	w.AddUint32(uint32(e.Bank))
	w.AddUint32(uint32(len(e.PCRs)))
	for i, p := range e.PCRs {
		w.AddUint32(uint32(p))
		var v []byte
		if i < len(e.PCRValues) {
			v = e.PCRValues[i]
		}
		wire.AddString(&w, v)
	}
	for _, s := range [][]byte{e.AKPublic, e.CertifyAttest, e.CertifySignature, e.SealedPublic, e.SRKName} {
		wire.AddString(&w, s)
	}
	w.AddUint32(uint32(len(e.SealedPCRs)))
	for _, p := range e.SealedPCRs {
		w.AddUint32(uint32(p))
	}
	if e.Version != 1 {
		var pin uint32
		if e.PolicyPIN {
			pin = 1
		}
		w.AddUint32(uint32(e.PolicyKind))
		w.AddUint32(pin)
		for _, s := range [][]byte{e.PolicySigner, e.ApprovedPolicy, e.Approval} {
			wire.AddString(&w, s)
		}
	}
	wire.AddString(&w, e.IdentityKey)
	wire.AddString(&w, e.Possession)
	// Only a field of 4 GiB or more fails, far beyond any evidence.
	return w.BytesOrPanic()
}

// ParseSSH decodes the SSH wire encoding of evidence (see MarshalSSH) and
// checks its structure. Errors wrap ErrMalformed, or ErrUnsupportedVersion
// for another format version. The returned Evidence does not alias b.
func ParseSSH(b []byte) (*Evidence, error) {
	if len(b) > maxEvidence {
		return nil, malformed("evidence", "%d bytes, more than %d", len(b), maxEvidence)
	}
	r := wire.NewReader(b)
	p := r.Preamble(preamble, preambleV1)
	if err := r.Err(); err != nil {
		return nil, wireError(err)
	}
	// Strings are copied; an empty one is nil.
	str := func(field string, max int) []byte { return nonEmpty(bytes.Clone(r.String(field, max))) }
	e := &Evidence{Version: int(p.Version)}
	e.Attest = str("attest", maxAttest)
	e.Signature = str("signature", maxSignature)
	bank := r.Uint32("bank")
	var err error
	if e.PCRs, e.PCRValues, err = readPCRs(r, "pcrs", true); err != nil {
		return nil, err
	}
	e.AKPublic = str("ak public", maxTPM2BPublic)
	e.CertifyAttest = str("certify attest", maxAttest)
	e.CertifySignature = str("certify signature", maxSignature)
	e.SealedPublic = str("sealed public", maxTPM2BPublic)
	e.SRKName = str("srk name", maxName)
	if e.SealedPCRs, _, err = readPCRs(r, "sealed pcrs", false); err != nil {
		return nil, err
	}
	var kind, pin uint32
	if e.Version != 1 {
		kind = r.Uint32("policy kind")
		pin = r.Uint32("pin")
		e.PolicySigner = str("policy signer", maxTPM2BPublic)
		e.ApprovedPolicy = str("approved policy", maxName)
		e.Approval = str("approval", maxSignature)
	}
	e.IdentityKey = str("identity key", maxIdentityKey)
	e.Possession = str("possession", maxPossession)
	r.End()
	switch err := r.Err(); {
	case err != nil:
		return nil, wireError(err)
	case bank > 0xffff:
		return nil, malformed("bank", "0x%x is not a TPM_ALG_ID", bank)
	case kind > 0xff:
		return nil, malformed("policy kind", "%d is not a policy kind", kind)
	case pin > 1:
		return nil, malformed("pin", "%d, want 0 or 1", pin)
	}
	e.Bank = tpm2.TPMIAlgHash(bank)
	e.PolicyKind = PolicyKind(kind)
	e.PolicyPIN = pin == 1
	if err := e.validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// readPCRs reads a count and that many PCR indexes, each followed by its
// value if withValues. validate checks the indexes.
func readPCRs(r *wire.Reader, field string, withValues bool) ([]int, [][]byte, error) {
	n := r.Uint32(field)
	if n > numPCRs {
		return nil, nil, malformed(field, "%d PCRs, more than %d", n, numPCRs)
	}
	var idx []int
	var values [][]byte
	for range n {
		idx = append(idx, int(r.Uint32(field)))
		if withValues {
			values = append(values, nonEmpty(bytes.Clone(r.String(field, maxPCRValue))))
		}
	}
	return idx, values, nil
}

// wireError maps an error of the wire.Reader of evidence to ErrMalformed
// or ErrUnsupportedVersion. An unknown "icn-agent-evidence-" magic is
// evidence of another version.
func wireError(err error) error {
	if v, ok := errors.AsType[*wire.VersionError](err); ok {
		return fmt.Errorf("%w %d under the magic %q", ErrUnsupportedVersion, v.Version, v.Magic)
	}
	if m, ok := errors.AsType[*wire.MagicError](err); ok {
		if strings.HasPrefix(m.Magic, "icn-agent-evidence-") {
			return fmt.Errorf("%w %q (this icn-agent reads %q and %q)", ErrUnsupportedVersion, m.Magic, formatV1, Format)
		}
		return malformed("magic", "not icn-agent evidence")
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

// evidenceJSON is the JSON form of Evidence.
type evidenceJSON struct {
	Format           string      `json:"format"`
	Version          int         `json:"version"`
	Bank             string      `json:"bank"`
	PCRs             []pcrJSON   `json:"pcrs"`
	Attest           []byte      `json:"attest"`
	Signature        []byte      `json:"signature"`
	AKPublic         []byte      `json:"ak_public"`
	CertifyAttest    []byte      `json:"certify_attest,omitempty"`
	CertifySignature []byte      `json:"certify_signature,omitempty"`
	SealedPublic     []byte      `json:"sealed_public,omitempty"`
	SRKName          []byte      `json:"srk_name,omitempty"`
	SealedPCRs       []int       `json:"sealed_pcrs,omitempty"`
	Policy           *policyJSON `json:"policy,omitempty"`
	IdentityKey      []byte      `json:"identity_key"`
	Possession       []byte      `json:"possession"`
}

// policyJSON is the JSON form of the policy description (version 2).
type policyJSON struct {
	Kind     string `json:"kind"`
	PIN      bool   `json:"pin,omitempty"`
	Signer   []byte `json:"signer,omitempty"`
	Approved []byte `json:"approved,omitempty"`
	Approval []byte `json:"approval,omitempty"`
}

type pcrJSON struct {
	Index int    `json:"index"`
	Value string `json:"value"`
}

// bankNames are the JSON names of PCR banks; others are written "0xNNNN".
var bankNames = map[tpm2.TPMIAlgHash]string{
	tpm2.TPMAlgSHA1:   "sha1",
	tpm2.TPMAlgSHA256: "sha256",
	tpm2.TPMAlgSHA384: "sha384",
	tpm2.TPMAlgSHA512: "sha512",
}

func bankName(b tpm2.TPMIAlgHash) string {
	if n, ok := bankNames[b]; ok {
		return n
	}
	return fmt.Sprintf("0x%04x", uint16(b))
}

func parseBank(s string) (tpm2.TPMIAlgHash, error) {
	for b, n := range bankNames {
		if s == n {
			return b, nil
		}
	}
	if hexs, ok := strings.CutPrefix(s, "0x"); ok && len(hexs) == 4 {
		if v, err := strconv.ParseUint(hexs, 16, 16); err == nil {
			return tpm2.TPMIAlgHash(v), nil
		}
	}
	return 0, malformed("bank", "unknown bank %q", s)
}

// MarshalJSON encodes e for files and humans: a JSON object whose "format"
// is "icn-agent-evidence-v2" (or -v1 for version 1 evidence), with binary fields in standard base64 (RFC
// 4648 4, padded), the bank by name ("sha256") and PCR values in lowercase
// hex:
//
//	{"format": "icn-agent-evidence-v2", "version": 2, "bank": "sha256",
//	 "pcrs": [{"index": 0, "value": "…"}, …], "attest": "…", "signature": "…",
//	 "ak_public": "…", "certify_attest": "…", "certify_signature": "…",
//	 "sealed_public": "…", "srk_name": "…", "sealed_pcrs": [0, 7],
//	 "policy": {"kind": "authorized-pcr", "pin": true, "signer": "…",
//	            "approved": "…", "approval": "…"},
//	 "identity_key": "…", "possession": "…"}
//
// "policy" is absent in version 1; its kind is "pcr" or "authorized-pcr".
//
// Empty optional members are left out.
func (e *Evidence) MarshalJSON() ([]byte, error) {
	j := evidenceJSON{
		Format:           formatOf(e.Version),
		Version:          e.Version,
		Bank:             bankName(e.Bank),
		Attest:           e.Attest,
		Signature:        e.Signature,
		AKPublic:         e.AKPublic,
		CertifyAttest:    e.CertifyAttest,
		CertifySignature: e.CertifySignature,
		SealedPublic:     e.SealedPublic,
		SRKName:          e.SRKName,
		SealedPCRs:       e.SealedPCRs,
		IdentityKey:      e.IdentityKey,
		Possession:       e.Possession,
	}
	if e.Version != 1 {
		j.Policy = &policyJSON{Kind: e.PolicyKind.String(), PIN: e.PolicyPIN, Signer: e.PolicySigner, Approved: e.ApprovedPolicy, Approval: e.Approval}
	}
	j.PCRs = make([]pcrJSON, len(e.PCRs))
	for i, p := range e.PCRs {
		var v []byte
		if i < len(e.PCRValues) {
			v = e.PCRValues[i]
		}
		j.PCRs[i] = pcrJSON{Index: p, Value: hex.EncodeToString(v)}
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON writes and checks its structure.
// Unknown members are refused. Errors wrap ErrMalformed, or
// ErrUnsupportedVersion for another format version.
func (e *Evidence) UnmarshalJSON(b []byte) error {
	if len(b) > 4*maxEvidence {
		return malformed("evidence", "%d bytes of JSON, more than %d", len(b), 4*maxEvidence)
	}
	var j evidenceJSON
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&j); err != nil {
		return malformed("json", "%v", err)
	}
	if d.More() {
		return malformed("json", "data after the evidence object")
	}
	if j.Format != Format && j.Format != formatV1 {
		if strings.HasPrefix(j.Format, "icn-agent-evidence-") {
			return fmt.Errorf("%w %q (this icn-agent reads %q and %q)", ErrUnsupportedVersion, j.Format, formatV1, Format)
		}
		return malformed("format", "%q is not icn-agent evidence", j.Format)
	}
	if j.Format != formatOf(j.Version) {
		return fmt.Errorf("%w %d under the format %q", ErrUnsupportedVersion, j.Version, j.Format)
	}
	bank, err := parseBank(j.Bank)
	if err != nil {
		return err
	}
	out := Evidence{
		Version:          j.Version,
		Attest:           nonEmpty(j.Attest),
		Signature:        nonEmpty(j.Signature),
		Bank:             bank,
		AKPublic:         nonEmpty(j.AKPublic),
		CertifyAttest:    nonEmpty(j.CertifyAttest),
		CertifySignature: nonEmpty(j.CertifySignature),
		SealedPublic:     nonEmpty(j.SealedPublic),
		SRKName:          nonEmpty(j.SRKName),
		IdentityKey:      nonEmpty(j.IdentityKey),
		Possession:       nonEmpty(j.Possession),
	}
	if len(j.SealedPCRs) > 0 {
		out.SealedPCRs = j.SealedPCRs
	}
	switch {
	case j.Policy != nil && j.Version == 1:
		return malformed("policy", "version 1 evidence has no policy description")
	case j.Policy != nil:
		if out.PolicyKind, err = parsePolicyKind(j.Policy.Kind); err != nil {
			return err
		}
		out.PolicyPIN = j.Policy.PIN
		out.PolicySigner = nonEmpty(j.Policy.Signer)
		out.ApprovedPolicy = nonEmpty(j.Policy.Approved)
		out.Approval = nonEmpty(j.Policy.Approval)
	case j.Version != 1:
		return malformed("policy", "missing")
	}
	if len(j.PCRs) > numPCRs {
		return malformed("pcrs", "%d PCRs, more than %d", len(j.PCRs), numPCRs)
	}
	for _, p := range j.PCRs {
		v, err := hex.DecodeString(p.Value)
		if err != nil {
			return malformed("pcrs", "PCR %d value: %v", p.Index, err)
		}
		out.PCRs = append(out.PCRs, p.Index)
		out.PCRValues = append(out.PCRValues, nonEmpty(v))
	}
	if err := out.validate(); err != nil {
		return err
	}
	*e = out
	return nil
}

// nonEmpty returns nil for an empty slice, so that decoded evidence compares
// equal whatever encoding it came from.
func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
