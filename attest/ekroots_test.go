package attest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/icn/icn-agent/attest"
)

func testCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func pemOf(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// A bundle's self-signed certificates are roots, the others
// intermediates, whatever their order; other blocks are skipped.
func TestParseEKTrust(t *testing.T) {
	root, rootKey := testCert(t, "root", nil, nil)
	inter, interKey := testCert(t, "intermediate", root, rootKey)
	leaf, _ := testCert(t, "ek", inter, interKey)
	bundle := "vendor bundle\n" + pemOf("CERTIFICATE", inter.Raw) + pemOf("PUBLIC KEY", []byte{1}) + pemOf("CERTIFICATE", root.Raw)
	trust, err := attest.ParseEKTrust([]byte(bundle))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: trust.Roots, Intermediates: trust.Intermediates}); err != nil {
		t.Fatalf("the leaf does not chain through the bundle: %v", err)
	}
	// The intermediate alone is no root.
	only, err := attest.ParseEKTrust([]byte(pemOf("CERTIFICATE", inter.Raw)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: only.Roots, Intermediates: only.Intermediates}); err == nil {
		t.Fatal("an intermediate was trusted as a root")
	}

	if _, err := attest.ParseEKTrust([]byte("nothing\n" + pemOf("PUBLIC KEY", []byte{1}))); !errors.Is(err, attest.ErrNoCertificate) {
		t.Errorf("no certificate: %v, want ErrNoCertificate", err)
	}
	_, err = attest.ParseEKTrust([]byte(pemOf("CERTIFICATE", root.Raw) + pemOf("CERTIFICATE", []byte("junk"))))
	if err == nil || !strings.HasPrefix(err.Error(), "certificate 2: ") {
		t.Errorf("bad second certificate: %v, want it named", err)
	}
}

func TestParsePEMPublicKey(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// As icn-agent ak prints it: a comment line, then the PEM.
	got, err := attest.ParsePEMPublicKey([]byte("# name 000b00\n" + pemOf("PUBLIC KEY", der)))
	if err != nil || !key.PublicKey.Equal(got) {
		t.Fatalf("ParsePEMPublicKey = %v, %v", got, err)
	}
	if _, err := attest.ParsePEMPublicKey([]byte(pemOf("CERTIFICATE", []byte{1}))); !errors.Is(err, attest.ErrNoPublicKey) {
		t.Errorf("no public key: %v, want ErrNoPublicKey", err)
	}
}
