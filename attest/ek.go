package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Errors of EK-rooted trust (VerifyEK, Challenge.Check), each for one
// check, in the order a verifier meets them.
var (
	// ErrNoEKCertificate means the TPM holds no endorsement key
	// certificate that icn-agent reads (TCG EK profile NV indexes
	// 0x01c00002 for RSA-2048 and 0x01c0000a for ECC NIST P-256): nothing
	// ties its keys to a manufacturer. Software and simulated TPMs
	// usually have none.
	ErrNoEKCertificate = errors.New("attest: the TPM has no endorsement key certificate")
	// ErrEKChainUntrusted means the EK certificate does not chain to the
	// verifier's trusted roots (through the intermediates given), or is
	// not an EK certificate.
	ErrEKChainUntrusted = errors.New("attest: the endorsement key certificate is not trusted")
	// ErrEKMismatch means the endorsement key the agent presented is not
	// the one its certificate certifies.
	ErrEKMismatch = errors.New("attest: the endorsement key is not the certified one")
	// ErrActivationFailed means the agent did not return the secret of a
	// credential made for its attestation key under its endorsement key:
	// the attestation key is not in the TPM that holds the EK.
	ErrActivationFailed = errors.New("attest: credential activation failed")
)

// oidTCGKpEKCertificate is the extended key usage of an EK certificate
// (TCG EK Credential Profile, tcg-kp-EKCertificate).
var oidTCGKpEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}

// oidSubjectAltName is the subjectAltName extension. EK certificates carry
// it critical, holding only a directoryName with the TPM's manufacturer,
// model and version, which crypto/x509 does not interpret.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// EKInfo is what an agent tells a verifier about its TPM's endorsement key
// and its attestation key (see EKExtension).
type EKInfo struct {
	// Certificate is the EK certificate, DER, as the TPM's NV index holds
	// it (trailing padding removed); empty if the TPM has none.
	Certificate []byte
	// EKPublic is the EK's marshalled TPM2B_PUBLIC.
	EKPublic []byte
	// AKPublic is the attestation key's marshalled TPM2B_PUBLIC.
	AKPublic []byte
}

// EKTrust is what a verifier trusts: the roots of TPM manufacturers (or a
// local CA), and intermediates to build chains with.
type EKTrust struct {
	Roots         *x509.CertPool
	Intermediates *x509.CertPool
}

// VerifiedEK is an endorsement key whose certificate chains to a trusted
// root.
type VerifiedEK struct {
	// Certificate is the EK certificate.
	Certificate *x509.Certificate
	// Chain is the chain from it to a trusted root.
	Chain []*x509.Certificate
	// public is the EK's public area, to make credentials for.
	public *tpm2.TPMTPublic
	// akName is the Name of the attestation key the agent presented.
	akName []byte
}

// AKName returns the TPM Name of the attestation key the agent presented
// with the EK. It is proven to live in the EK's TPM only once a Challenge
// made by NewChallenge is answered (Challenge.Check).
func (v *VerifiedEK) AKName() []byte { return bytes.Clone(v.akName) }

// VerifyEK checks info against trust: the EK certificate is present
// (ErrNoEKCertificate), parses, is an EK certificate and chains to a
// trusted root (ErrEKChainUntrusted), and certifies the EK public area
// given (ErrEKMismatch); the AK is an icn-agent attestation key (ErrBadAK,
// ErrAKNotRestricted, ErrWeakHash). It needs no TPM.
func VerifyEK(info *EKInfo, trust EKTrust) (*VerifiedEK, error) {
	if info == nil || len(info.Certificate) == 0 {
		return nil, ErrNoEKCertificate
	}
	cert, err := x509.ParseCertificate(info.Certificate)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKChainUntrusted, err)
	}
	// The critical subjectAltName of an EK certificate holds only a
	// directoryName (the TPM's manufacturer, model and version), which
	// crypto/x509 leaves unhandled; the chain is judged on the issuers'
	// signatures, so it is accepted here as verifiers of EK certificates
	// do.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions),
		func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSubjectAltName) })
	if !slices.ContainsFunc(cert.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.Equal(oidTCGKpEKCertificate) }) {
		return nil, fmt.Errorf("%w: the certificate of %q lacks the tcg-kp-EKCertificate usage", ErrEKChainUntrusted, cert.Subject)
	}
	if trust.Roots == nil {
		return nil, fmt.Errorf("%w: no trusted roots", ErrEKChainUntrusted)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         trust.Roots,
		Intermediates: trust.Intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKChainUntrusted, err)
	}
	ek, _, err := parseTPM2BPublic(info.EKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: ek public area: %v", ErrEKMismatch, err)
	}
	certified, err := TPMPublicKey(ek)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKMismatch, err)
	}
	if eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(certified) {
		return nil, fmt.Errorf("%w: the certificate is for another key", ErrEKMismatch)
	}
	if !ek.ObjectAttributes.Restricted || !ek.ObjectAttributes.Decrypt || !ek.ObjectAttributes.FixedTPM {
		return nil, fmt.Errorf("%w: not a restricted decryption key that never leaves its TPM", ErrEKMismatch)
	}
	_, akName, err := parseAKPublic(info.AKPublic)
	if err != nil {
		return nil, err
	}
	return &VerifiedEK{Certificate: cert, Chain: chains[0], public: ek, akName: akName}, nil
}

// TPMPublicKey returns the public key of an RSA or ECC (NIST P-256 or
// P-384) TPM public area: an *rsa.PublicKey or an *ecdsa.PublicKey.
func TPMPublicKey(p *tpm2.TPMTPublic) (crypto.PublicKey, error) {
	switch p.Type {
	case tpm2.TPMAlgRSA:
		parms, err := p.Parameters.RSADetail()
		if err != nil {
			return nil, err
		}
		n, err := p.Unique.RSA()
		if err != nil {
			return nil, err
		}
		e := int(parms.Exponent)
		if e == 0 {
			e = 65537
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n.Buffer), E: e}, nil
	case tpm2.TPMAlgECC:
		parms, err := p.Parameters.ECCDetail()
		if err != nil {
			return nil, err
		}
		var curve elliptic.Curve
		switch parms.CurveID {
		case tpm2.TPMECCNistP256:
			curve = elliptic.P256()
		case tpm2.TPMECCNistP384:
			curve = elliptic.P384()
		default:
			return nil, fmt.Errorf("ecc curve 0x%04x is not supported", uint16(parms.CurveID))
		}
		pt, err := p.Unique.ECC()
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(pt.X.Buffer) != size || len(pt.Y.Buffer) != size {
			return nil, errors.New("ecc point of the wrong size")
		}
		return ecdsa.ParseUncompressedPublicKey(curve, slices.Concat([]byte{4}, pt.X.Buffer, pt.Y.Buffer))
	}
	return nil, fmt.Errorf("key type 0x%04x is not supported", uint16(p.Type))
}

// maxEKCert bounds an EK certificate read from NV or from an agent.
const maxEKCert = 4096

// credentialSize is the size of the secret in a credential challenge.
const credentialSize = 32

// Challenge is a credential (TPM2_MakeCredential, computed by the
// verifier) that only the TPM holding the verified EK can open, and only
// for the attestation key named when it was made (TPM2_ActivateCredential).
type Challenge struct {
	// Blob is the credential blob (a TPM2B_ID_OBJECT's contents).
	Blob []byte
	// Secret is the encrypted seed (a TPM2B_ENCRYPTED_SECRET's contents).
	Secret []byte

	want []byte
}

// NewChallenge makes a credential for the attestation key of v under its
// EK, with a fresh random secret read from rand (crypto/rand if nil).
func (v *VerifiedEK) NewChallenge(random io.Reader) (*Challenge, error) {
	if random == nil {
		random = rand.Reader
	}
	want := make([]byte, credentialSize)
	if _, err := io.ReadFull(random, want); err != nil {
		return nil, fmt.Errorf("attest: credential secret: %w", err)
	}
	key, err := tpm2.ImportEncapsulationKey(v.public)
	if err != nil {
		return nil, fmt.Errorf("attest: endorsement key: %w", err)
	}
	blob, secret, err := tpm2.CreateCredential(random, key, v.akName, want)
	if err != nil {
		return nil, fmt.Errorf("attest: make credential: %w", err)
	}
	return &Challenge{Blob: blob, Secret: secret, want: want}, nil
}

// Check compares the secret the agent returned with the one the challenge
// holds, in constant time (ErrActivationFailed).
func (c *Challenge) Check(got []byte) error {
	if len(c.want) == 0 || subtle.ConstantTimeCompare(c.want, got) != 1 {
		return ErrActivationFailed
	}
	return nil
}

// parseCertLenient parses a DER certificate.
func parseCertLenient(der []byte) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ek certificate: %w", err)
	}
	return cert, nil
}
