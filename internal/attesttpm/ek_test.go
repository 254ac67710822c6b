package attesttpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/icn/icn-agent/attest"

	"github.com/icn/icn-agent/internal/swtpmtest"
)

// pemPool reads PEM certificates into a pool.
func pemPool(t *testing.T, files ...string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !pool.AppendCertsFromPEM(data) {
			t.Fatalf("no certificate in %s", f)
		}
	}
	return pool
}

// otherCA is a root certificate that issued nothing the TPM has.
func otherCA(t *testing.T) *x509.CertPool {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "swtpm-localca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return pool
}

// TestEKRootedTrust runs the exchange a verifier that has never seen the
// machine makes, on a swtpm manufactured with an EK certificate from a
// local CA: the chain to the CA's root, then credential activation proving
// the AK lives in the TPM holding that EK.
func TestEKRootedTrust(t *testing.T) {
	m := swtpmtest.Manufacture(t)
	sw := swtpmtest.StartWithState(t, m.StateDir)
	f := &fixture{t: t, kind: "swtpm", stateDir: t.TempDir(), sw: sw}
	f.open()
	t.Cleanup(func() { f.tpm.Close() })
	ctx := context.Background()
	ak := f.ak("")

	info, err := ak.EKInfo(ctx, f.tpm)
	if err != nil {
		t.Fatal(err)
	}
	trusted := attest.EKTrust{Roots: pemPool(t, m.RootCA), Intermediates: pemPool(t, m.IssuerCA)}
	v, err := attest.VerifyEK(info, trusted)
	if err != nil {
		t.Fatalf("VerifyEK with the issuing CA: %v", err)
	}
	if string(v.AKName()) != string(ak.Name()) {
		t.Fatal("the verified AK name is not the agent's AK")
	}
	ch, err := v.NewChallenge(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ak.Activate(ctx, f.tpm, ch.Blob, ch.Secret)
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if err := ch.Check(got); err != nil {
		t.Fatal(err)
	}
	if err := ch.Check(append([]byte{1}, got[1:]...)); !errors.Is(err, attest.ErrActivationFailed) {
		t.Errorf("Check of a wrong secret: %v", err)
	}

	// Another CA's roots: the chain is not trusted.
	if _, err := attest.VerifyEK(info, attest.EKTrust{Roots: otherCA(t), Intermediates: pemPool(t, m.IssuerCA)}); !errors.Is(err, attest.ErrEKChainUntrusted) {
		t.Errorf("VerifyEK with another CA: %v, want ErrEKChainUntrusted", err)
	}
	if _, err := attest.VerifyEK(info, attest.EKTrust{Roots: pemPool(t, m.IssuerCA)}); err != nil {
		t.Errorf("VerifyEK trusting the intermediate itself: %v", err)
	}
	// An EK public area other than the certified one.
	swapped := *info
	swapped.EKPublic = ak.public
	if _, err := attest.VerifyEK(&swapped, trusted); !errors.Is(err, attest.ErrEKMismatch) {
		t.Errorf("VerifyEK of another key: %v, want ErrEKMismatch", err)
	}

	// A credential made for another AK is not opened for this one: a
	// software key presented as the AK cannot pass.
	other := f.ak(f.stateDir + "/other-ak.pem")
	infoOther := *info
	infoOther.AKPublic = other.public
	forOther, err := attest.VerifyEK(&infoOther, trusted)
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := forOther.NewChallenge(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ak.Activate(ctx, f.tpm, ch2.Blob, ch2.Secret); err == nil && ch2.Check(got) == nil {
		t.Error("a credential for another AK was activated by this one")
	}
}

// The simulator has no EK certificate: the verifier says so.
func TestEKNoCertificate(t *testing.T) {
	f := newFixture(t, "sim")
	ak := f.ak("")
	info, err := ak.EKInfo(context.Background(), f.tpm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyEK(info, attest.EKTrust{Roots: otherCA(t)}); !errors.Is(err, attest.ErrNoEKCertificate) {
		t.Errorf("VerifyEK: %v, want ErrNoEKCertificate", err)
	}
	if _, err := ak.Activate(context.Background(), f.tpm, []byte{0, 1}, []byte{0, 1}); !errors.Is(err, attest.ErrNoEKCertificate) {
		t.Errorf("Activate: %v, want ErrNoEKCertificate", err)
	}
}
