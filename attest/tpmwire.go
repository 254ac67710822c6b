package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// This file decodes and recomputes the TPM structures a verifier needs,
// with no TPM: everything here is pure computation over bytes.

const (
	// sha256Size is the size of a SHA-256 digest.
	sha256Size = sha256.Size
	// nameSize is the size of a SHA-256 TPM Name: alg id + digest.
	nameSize = 2 + sha256Size
	// numPCRs is the number of PCRs a selection may name: 0 to 23, what a
	// PC Client TPM has and a 3-byte selection bitmap can express.
	numPCRs = 24
	// p256Size is the size of a P-256 coordinate or signature half.
	p256Size = 32
)

// TPM structure tags and codes used below (TPM 2.0 Part 2).
const (
	stAttestQuote        = tpm2.TPMSTAttestQuote        // 0x8018
	stAttestSessionAudit = tpm2.TPMSTAttestSessionAudit // 0x8016
)

// unmarshalExact decodes a TPM structure that must occupy all of data and
// re-encode to exactly data: trailing bytes and non-canonical encodings
// (reserved bits, for instance) are refused. go-tpm's decoder works by
// reflection and is not ours; a panic in it is turned into an error so that
// no input can crash a verifier.
func unmarshalExact[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](data []byte) (out *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("decoder failed: %v", r)
		}
	}()
	v, err := tpm2.Unmarshal[T, P](data)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(*v), data) {
		return nil, errors.New("trailing bytes or non-canonical encoding")
	}
	return v, nil
}

// parseTPM2BPublic decodes a marshalled TPM2B_PUBLIC. It returns the public
// area and its TPMT_PUBLIC bytes, which re-encoding it gives back exactly.
func parseTPM2BPublic(b []byte) (*tpm2.TPMTPublic, []byte, error) {
	if len(b) < 2 {
		return nil, nil, errors.New("too short for a TPM2B_PUBLIC")
	}
	if n := int(binary.BigEndian.Uint16(b)); n != len(b)-2 {
		return nil, nil, fmt.Errorf("TPM2B_PUBLIC size %d, but %d bytes follow", n, len(b)-2)
	}
	raw := b[2:]
	pub, err := unmarshalExact[tpm2.TPMTPublic](raw)
	if err != nil {
		return nil, nil, fmt.Errorf("TPMT_PUBLIC: %v", err)
	}
	return pub, raw, nil
}

// nameOf returns the TPM Name of a public area that parseTPM2BPublic
// returned: nameAlg || H_nameAlg(TPMT_PUBLIC), computed by go-tpm. It fails
// only for a nameAlg that is not a hash go-tpm knows.
func nameOf(pub *tpm2.TPMTPublic) ([]byte, error) {
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, err
	}
	return name.Buffer, nil
}

// qualifiedName returns QN(child) = nameAlg || H(QN(parent) || Name(child))
// for a child whose nameAlg is SHA-256 (TPM 2.0 Part 1, 16.6 "Qualified
// Name").
func qualifiedName(parentQN, name []byte) []byte {
	h := sha256.New()
	h.Write(parentQN)
	h.Write(name)
	return h.Sum([]byte{0x00, byte(tpm2.TPMAlgSHA256)})
}

// srkChildQN returns the Qualified Name of a child of the storage root key
// whose Name is srkName, the SRK being a primary key of the owner
// hierarchy.
func srkChildQN(srkName, childName []byte) []byte {
	// The Qualified Name of a hierarchy is its Name, its handle.
	owner := tpm2.HandleName(tpm2.TPMRHOwner)
	return qualifiedName(qualifiedName(owner.Buffer, srkName), childName)
}

// attestHeader checks the fixed prefix of a TPMS_ATTEST: the magic
// TPM_GENERATED_VALUE and the structure tag.
func attestHeader(b []byte, want tpm2.TPMST) error {
	if len(b) < 6 {
		return fmt.Errorf("%w: %d bytes, too short for a TPMS_ATTEST", ErrBadMagic, len(b))
	}
	if magic := binary.BigEndian.Uint32(b); magic != uint32(tpm2.TPMGeneratedValue) {
		return fmt.Errorf("%w: magic 0x%08x", ErrBadMagic, magic)
	}
	if typ := tpm2.TPMST(binary.BigEndian.Uint16(b[4:])); typ != want {
		return fmt.Errorf("%w: type 0x%04x, want 0x%04x", ErrBadType, uint16(typ), uint16(want))
	}
	return nil
}

// parseAttest decodes a TPMS_ATTEST after attestHeader accepted it.
func parseAttest(b []byte) (*tpm2.TPMSAttest, error) {
	a, err := unmarshalExact[tpm2.TPMSAttest](b)
	if err != nil {
		return nil, fmt.Errorf("%w: TPMS_ATTEST: %v", ErrMalformed, err)
	}
	return a, nil
}

// verifyECDSA checks a marshalled TPMT_SIGNATURE over msg: it must be an
// ECDSA-SHA256 signature with both halves exactly 32 bytes (as a TPM writes
// them) that verifies with key. The returned error is wrapped by the caller
// into the sentinel of the check; ErrWeakHash is wrapped here.
func verifyECDSA(key *ecdsa.PublicKey, msg, sig []byte) error {
	s, err := unmarshalExact[tpm2.TPMTSignature](sig)
	if err != nil {
		return fmt.Errorf("TPMT_SIGNATURE: %v", err)
	}
	if s.SigAlg != tpm2.TPMAlgECDSA {
		return fmt.Errorf("signature algorithm 0x%04x, want ECDSA", uint16(s.SigAlg))
	}
	e, err := s.Signature.ECDSA()
	if err != nil {
		return fmt.Errorf("ECDSA signature: %v", err)
	}
	if e.Hash != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: signature hash 0x%04x", ErrWeakHash, uint16(e.Hash))
	}
	if len(e.SignatureR.Buffer) != p256Size || len(e.SignatureS.Buffer) != p256Size {
		return fmt.Errorf("signature r and s are %d and %d bytes, want %d", len(e.SignatureR.Buffer), len(e.SignatureS.Buffer), p256Size)
	}
	digest := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(e.SignatureR.Buffer)
	ss := new(big.Int).SetBytes(e.SignatureS.Buffer)
	if !ecdsa.Verify(key, digest[:], r, ss) {
		return errors.New("ECDSA verification failed")
	}
	return nil
}

// akAttributes are the exact attributes of an icn-agent attestation key.
var akAttributes = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	NoDA:                true,
	Restricted:          true,
	SignEncrypt:         true,
}

// akTemplate is the public area of an icn-agent attestation key: a
// restricted ECC NIST P-256 signing key with the ECDSA-SHA256 scheme, an
// empty password (userWithAuth, noDA: it protects nothing secret, the TPM
// only ever signs its own attestations with it) and no policy.
var akTemplate = tpm2.TPMTPublic{
	Type:             tpm2.TPMAlgECC,
	NameAlg:          tpm2.TPMAlgSHA256,
	ObjectAttributes: akAttributes,
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// akTemplateBytes is akTemplate with an empty unique field, marshalled.
var akTemplateBytes = tpm2.Marshal(akTemplate)

// attrBits returns the attribute bits of a TPMA_OBJECT.
func attrBits(a tpm2.TPMAObject) uint32 {
	return binary.BigEndian.Uint32(tpm2.Marshal(a))
}

// parseAKPublic checks a marshalled TPM2B_PUBLIC of an attestation key and
// returns its key and Name.
func parseAKPublic(b []byte) (*ecdsa.PublicKey, []byte, error) {
	pub, _, err := parseTPM2BPublic(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	if pub.Type != tpm2.TPMAlgECC {
		return nil, nil, fmt.Errorf("%w: type 0x%04x, want ECC", ErrBadAK, uint16(pub.Type))
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("%w: attestation key nameAlg 0x%04x", ErrWeakHash, uint16(pub.NameAlg))
	}
	if got, want := attrBits(pub.ObjectAttributes), attrBits(akAttributes); got != want {
		return nil, nil, fmt.Errorf("%w: attributes 0x%08x, want 0x%08x", ErrAKNotRestricted, got, want)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, nil, fmt.Errorf("%w: curve 0x%04x, want NIST P-256", ErrBadAK, uint16(parms.CurveID))
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, nil, fmt.Errorf("%w: scheme 0x%04x, want ECDSA", ErrBadAK, uint16(parms.Scheme.Scheme))
	}
	scheme, err := parms.Scheme.Details.ECDSA()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	if scheme.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("%w: attestation key scheme hash 0x%04x", ErrWeakHash, uint16(scheme.HashAlg))
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	// Everything but the point must be the template exactly (no policy,
	// no symmetric or KDF parameters).
	tmpl := *pub
	tmpl.Unique = akTemplate.Unique
	if !bytes.Equal(tpm2.Marshal(tmpl), akTemplateBytes) {
		return nil, nil, fmt.Errorf("%w: public area differs from the icn-agent template", ErrBadAK)
	}
	x, y := point.X.Buffer, point.Y.Buffer
	if len(x) != p256Size || len(y) != p256Size {
		return nil, nil, fmt.Errorf("%w: point coordinates are %d and %d bytes, want %d", ErrBadAK, len(x), len(y), p256Size)
	}
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	name, err := nameOf(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadAK, err)
	}
	return key, name, nil
}

// selectionBits returns the PCRs a TPML_PCR_SELECTION selects in bank as a
// bitmask. ok is false if it selects anything it cannot express: PCRs
// above 23, or any PCR of another bank.
func selectionBits(sel tpm2.TPMLPCRSelection, bank tpm2.TPMIAlgHash) (mask uint32, ok bool) {
	for _, s := range sel.PCRSelections {
		for i, b := range s.PCRSelect {
			if b == 0 {
				continue
			}
			if s.Hash != bank || i >= numPCRs/8 {
				return 0, false
			}
			mask |= uint32(b) << (8 * i)
		}
	}
	return mask, true
}

// maskOf returns the bitmask of the given PCR indexes (0..23).
func maskOf(indexes []int) uint32 {
	var m uint32
	for _, i := range indexes {
		if i >= 0 && i < numPCRs {
			m |= 1 << i
		}
	}
	return m
}

// indexesOf lists the PCRs set in mask, ascending.
func indexesOf(mask uint32) []int {
	var out []int
	for i := 0; i < numPCRs; i++ {
		if mask&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// selection returns the TPML_PCR_SELECTION of indexes in bank with a 3-byte
// bitmap, the encoding a PC Client TPM expects and sealed objects' policies
// are computed over.
func selection(bank tpm2.TPMIAlgHash, indexes []int) tpm2.TPMLPCRSelection {
	m := maskOf(indexes)
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      bank,
		PCRSelect: []byte{byte(m), byte(m >> 8), byte(m >> 16)},
	}}}
}

// pcrDigest is the digest TPM2_Quote signs over PCR values: SHA-256 of
// their concatenation in index order.
func pcrDigest(values [][]byte) []byte {
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	return h.Sum(nil)
}

// policyKey returns the ECDSA key of a policy signing key's public area:
// an ECC NIST P-256 key with the ECDSA-SHA256 scheme, which is what
// TPM2_VerifySignature accepts for the approvals sealstore makes.
func policyKey(pub *tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	if pub.Type != tpm2.TPMAlgECC || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("policy key: type 0x%04x, nameAlg 0x%04x, want ECC with SHA-256", uint16(pub.Type), uint16(pub.NameAlg))
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("policy key: %v", err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 || parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, fmt.Errorf("policy key: curve 0x%04x, scheme 0x%04x, want NIST P-256 ECDSA", uint16(parms.CurveID), uint16(parms.Scheme.Scheme))
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("policy key: %v", err)
	}
	x, y := point.X.Buffer, point.Y.Buffer
	if len(x) != p256Size || len(y) != p256Size {
		return nil, fmt.Errorf("policy key: point coordinates are %d and %d bytes, want %d", len(x), len(y), p256Size)
	}
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
}

// readPublicAuditDigest is the session audit digest of a fresh SHA-256
// audit session after exactly one command, TPM2_ReadPublic of the object
// whose public area is sealedPublic (a marshalled TPM2B_PUBLIC), Name is
// name and Qualified Name is qn (TPM 2.0 Part 1, 19.6.14 and 18.7):
//
//	cpHash = SHA256(TPM_CC_ReadPublic || name)
//	rpHash = SHA256(TPM_RC_SUCCESS || TPM_CC_ReadPublic || TPM2B_PUBLIC || TPM2B_NAME(name) || TPM2B_NAME(qn))
//	digest = SHA256(0^32 || cpHash || rpHash)
func readPublicAuditDigest(sealedPublic, name, qn []byte) []byte {
	cc := binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMCCReadPublic))
	cp := sha256.New()
	cp.Write(cc)
	cp.Write(name)
	rp := sha256.New()
	rp.Write([]byte{0, 0, 0, 0})
	rp.Write(cc)
	rp.Write(sealedPublic)
	rp.Write(binary.BigEndian.AppendUint16(nil, uint16(len(name))))
	rp.Write(name)
	rp.Write(binary.BigEndian.AppendUint16(nil, uint16(len(qn))))
	rp.Write(qn)
	d := sha256.New()
	d.Write(make([]byte, sha256Size))
	d.Write(cp.Sum(nil))
	d.Write(rp.Sum(nil))
	return d.Sum(nil)
}

// AKTemplate returns the public area template of an icn-agent attestation
// key (the unique field empty): a restricted ECC NIST P-256 signing key
// with the ECDSA-SHA256 scheme, userWithAuth and noDA, no policy. Verify
// accepts only keys made from it; the TPM side creates the key with it.
func AKTemplate() tpm2.TPMTPublic { return akTemplate }

// ParseAKPublic checks that b, a marshalled TPM2B_PUBLIC, is an icn-agent
// attestation key (made from AKTemplate) and returns its public key and
// its TPM Name. Errors wrap ErrBadAK, ErrAKNotRestricted or ErrWeakHash.
func ParseAKPublic(b []byte) (*ecdsa.PublicKey, []byte, error) { return parseAKPublic(b) }
