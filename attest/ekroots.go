package attest

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Files a verifier is given to trust, read from PEM:
//
//   - an EK root bundle ([ParseEKTrust]): the certificates of the TPM
//     manufacturers' roots and intermediates, as the vendors publish
//     them, concatenated in any order;
//   - a pinned attestation key ([ParsePEMPublicKey]): the PKIX public key
//     that icn-agent ak prints, its "# name" comment line included.
//
// Neither parser fetches anything: what to trust is the caller's choice.

var (
	// ErrNoCertificate means an EK root bundle holds no PEM certificate.
	ErrNoCertificate = errors.New("attest: no PEM certificate")
	// ErrNoPublicKey means a file holds no PEM public key.
	ErrNoPublicKey = errors.New("attest: no PEM public key")
)

// ParseEKTrust parses a PEM bundle of trusted certificates for
// AttestAgent: the self-signed ones become roots, the others
// intermediates (a self-signed certificate is trusted as a root only
// because the bundle's owner put it there). Blocks other than
// CERTIFICATE are skipped. A certificate that does not parse is an error
// naming its place in the bundle, counting from 1; a bundle without a
// certificate is ErrNoCertificate.
func ParseEKTrust(data []byte) (EKTrust, error) {
	trust := EKTrust{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return EKTrust{}, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
		if cert.CheckSignatureFrom(cert) == nil {
			trust.Roots.AddCert(cert)
		} else {
			trust.Intermediates.AddCert(cert)
		}
	}
	if n == 0 {
		return EKTrust{}, ErrNoCertificate
	}
	return trust, nil
}

// ParsePEMPublicKey returns the first PEM "PUBLIC KEY" block of data,
// parsed as a PKIX public key (for VerifyOptions.TrustedAK). Text and
// other blocks before it are skipped; without one it returns
// ErrNoPublicKey.
func ParsePEMPublicKey(data []byte) (any, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, ErrNoPublicKey
		}
		if b.Type == "PUBLIC KEY" {
			return x509.ParsePKIXPublicKey(b.Bytes)
		}
	}
}
