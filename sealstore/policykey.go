package sealstore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// ErrNotPolicyKey is wrapped by errors about a key that is not a usable
// policy signing key (an ECDSA key on NIST P-256).
var ErrNotPolicyKey = errors.New("sealstore: not an ECDSA P-256 policy signing key")

// PolicyKey is the public half of a policy signing key: an ECDSA P-256 key
// whose signatures over PolicyPCR digests (see SignedPolicy) let an object
// sealed with a PolicyAuthorizedPCR policy unseal under the signed PCR
// values. Its private half is kept away from the machine, ideally offline.
//
// The TPM knows the key by the public area PolicyKeyPublic builds from the
// point (loaded with TPM2_LoadExternal to verify signatures), and names it
// by the SHA-256 of that area; the sealed object's policy holds that Name.
type PolicyKey struct {
	// Public is the ECDSA public key.
	Public *ecdsa.PublicKey
	// TPMPublic is the key's public area, as PolicyKeyPublic builds it.
	TPMPublic tpm2.TPMTPublic
	// Name is the TPM Name of TPMPublic: the 2-byte TPM_ALG_SHA256
	// followed by the SHA-256 of the marshalled area, 34 bytes.
	Name []byte
}

// policyKeyTemplate is the public area of a policy signing key with the
// given 32-byte coordinates: an ECC NIST P-256 signing key, ECDSA with
// SHA-256, name algorithm SHA-256, attributes sign and userWithAuth only.
// It has no private part on the TPM: it is loaded public only, to verify.
func policyKeyTemplate(x, y []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			SignEncrypt:  true,
			UserWithAuth: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x},
			Y: tpm2.TPM2BECCParameter{Buffer: y},
		}),
	}
}

// p256Size is the size of a P-256 coordinate or scalar.
const p256Size = 32

// NewPolicyKey returns the policy key for pub, which must be an ECDSA key
// on NIST P-256. Errors wrap ErrNotPolicyKey.
func NewPolicyKey(pub *ecdsa.PublicKey) (*PolicyKey, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: not on curve P-256", ErrNotPolicyKey)
	}
	point, err := pub.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotPolicyKey, err)
	}
	return policyKeyFromPoint(point)
}

// policyKeyFromPoint returns the policy key of an uncompressed P-256 point
// (0x04 || X || Y), checking that it is on the curve.
func policyKeyFromPoint(point []byte) (*PolicyKey, error) {
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotPolicyKey, err)
	}
	x, y := point[1:1+p256Size], point[1+p256Size:]
	tmpl := policyKeyTemplate(bytes.Clone(x), bytes.Clone(y))
	digest := sha256.Sum256(tpm2.Marshal(tmpl))
	name := append([]byte{byte(tpm2.TPMAlgSHA256 >> 8), byte(tpm2.TPMAlgSHA256)}, digest[:]...)
	return &PolicyKey{Public: pub, TPMPublic: tmpl, Name: name}, nil
}

// PolicyKeyPublic returns the marshalled TPM2B_PUBLIC of the key, as a
// blob's policy key field holds it.
func (k *PolicyKey) PolicyKeyPublic() []byte {
	return tpm2.Marshal(tpm2.New2B(k.TPMPublic))
}

// ID is a short identifier of the key for people and file names: the first
// 8 bytes of the SHA-256 in its Name, in hex (16 characters).
func (k *PolicyKey) ID() string {
	return hex.EncodeToString(k.Name[2:10])
}

// point returns the key as an uncompressed point.
func (k *PolicyKey) point() []byte {
	p, _ := k.Public.Bytes() // cannot fail: checked at construction
	return p
}

// PEM returns the public key as a PEM "PUBLIC KEY" block (PKIX,
// RFC 5280 SubjectPublicKeyInfo), the form openssl and systemd read.
func (k *PolicyKey) PEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		panic("sealstore: marshal P-256 public key: " + err.Error()) // cannot happen for a P-256 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePolicyKeyPEM parses a policy signing key's public half from a PEM
// "PUBLIC KEY" block (as written by PolicyKey.PEM or openssl ec -pubout).
// Errors wrap ErrNotPolicyKey.
func ParsePolicyKeyPEM(data []byte) (*PolicyKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: want exactly one PEM block", ErrNotPolicyKey)
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: PEM type %q, want \"PUBLIC KEY\"", ErrNotPolicyKey, truncate(block.Type, 64))
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotPolicyKey, err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T", ErrNotPolicyKey, pub)
	}
	return NewPolicyKey(ec)
}

// policyKeyPublicSize is the size of the canonical TPM2B_PUBLIC of a
// policy key.
var policyKeyPublicSize = len(tpm2.Marshal(tpm2.New2B(policyKeyTemplate(make([]byte, p256Size), make([]byte, p256Size)))))

// parsePolicyKeyPublic parses a blob's policy key field: the marshalled
// TPM2B_PUBLIC of a policy key, exactly as PolicyKeyPublic makes it. The
// encoding is fixed but for the point, so it is checked by rebuilding it
// from the point, without the generic TPM unmarshaller. Errors wrap
// ErrMalformedBlob.
func parsePolicyKeyPublic(pub2b []byte) (*PolicyKey, error) {
	const field = "policy key"
	if len(pub2b) != policyKeyPublicSize {
		return nil, malformed(field, "want %d bytes, got %d", policyKeyPublicSize, len(pub2b))
	}
	// The point is at the end: X and Y, each a uint16 size and 32 bytes.
	n := len(pub2b)
	x := pub2b[n-2*(2+p256Size)+2 : n-(2+p256Size)]
	y := pub2b[n-p256Size:]
	point := append(append([]byte{4}, x...), y...)
	k, err := policyKeyFromPoint(point)
	if err != nil {
		return nil, malformed(field, "%s", trimPrefix(err))
	}
	if !bytes.Equal(k.PolicyKeyPublic(), pub2b) {
		return nil, malformed(field, "not the public area of an ECDSA P-256 policy key")
	}
	return k, nil
}

// trimPrefix returns err's message without the package prefix.
func trimPrefix(err error) string {
	s := err.Error()
	for len(s) > 11 && s[:11] == "sealstore: " {
		s = s[11:]
	}
	return s
}
