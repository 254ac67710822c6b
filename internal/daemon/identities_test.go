package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/config"
	"github.com/icn/icn-agent/pcrwatch"
	"github.com/icn/icn-agent/sealstore"
)

// certFor returns an OpenSSH user certificate for pub, in
// authorized_keys form.
func certFor(t *testing.T, pub ssh.PublicKey) []byte {
	t.Helper()
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, KeyId: "test", ValidPrincipals: []string{"u"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(cert)
}

// TestCertificate: NAME-cert.pub beside the blob is the identity's
// certificate if it certifies the identity's key; anything else there (a
// certificate for another key, a plain key, a FIFO) is logged and
// skipped, never waited on.
func TestCertificate(t *testing.T) {
	dir := t.TempDir()
	store, err := sealstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	logs := make(chan string, 16)
	a := New(Options{Logger: newTestLogger(logs)})
	a.store = store
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(edPub)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewPublicKey(otherPub)
	b := &sealstore.Blob{Name: "work", PublicKey: pub}
	path := filepath.Join(dir, "work-cert.pub")

	if c := a.certificate(b); c != nil {
		t.Error("a certificate without a file")
	}
	for _, c := range []struct {
		what string
		data []byte
		log  string
	}{
		{"certificate", certFor(t, pub), ""},
		{"another key's certificate", certFor(t, other), "certificate is for another key; ignored"},
		{"plain key", ssh.MarshalAuthorizedKey(pub), "not an OpenSSH certificate; ignored"},
	} {
		if err := os.WriteFile(path, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		cert := a.certificate(b)
		if (cert != nil) != (c.log == "") {
			t.Errorf("%s: certificate %v", c.what, cert)
		}
		if c.log != "" {
			waitLog(t, logs, c.log)
		}
	}
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if a.certificate(b) != nil {
		t.Error("a certificate from a FIFO")
	}
	waitLog(t, logs, "not a regular file (a FIFO)")
}

// TestSetIdentities: each entry of a snapshot is served with its
// configured settings, except unusable files and identities whose
// destinations cannot be resolved.
func TestSetIdentities(t *testing.T) {
	logs := make(chan string, 16)
	cfg := config.Default()
	cfg.Identities = map[string]config.Identity{
		"confirmed":  {Confirm: true, Notify: true},
		"restricted": {Destinations: []string{"unknown.example"}},
	}
	home := t.TempDir() // no known_hosts
	a := New(Options{Config: cfg, Store: t.TempDir(), Logger: newTestLogger(logs),
		Getenv: func(k string) string { return map[string]string{"HOME": home}[k] }})
	var err error
	if a.store, err = sealstore.Open(a.opts.Store); err != nil {
		t.Fatal(err)
	}
	a.srv = agentsrv.New(agentsrv.Config{Unsealer: noTPM{errors.New("no TPM")}, Logger: a.log})
	defer a.srv.Close()
	a.pcrs = pcrwatch.New(nil, 0, a.log)
	blob := func(name string, pcrs ...int) sealstore.Entry {
		edPub, _, _ := ed25519.GenerateKey(rand.Reader)
		pub, _ := ssh.NewPublicKey(edPub)
		p := sealstore.Policy{Kind: sealstore.PolicyPCR}
		for _, i := range pcrs {
			p.PCRs = append(p.PCRs, sealstore.PCRValue{Index: i})
		}
		return sealstore.Entry{Name: name, Blob: &sealstore.Blob{Name: name, PublicKey: pub, Policy: p}}
	}
	a.setIdentities(sealstore.Snapshot{Entries: []sealstore.Entry{
		blob("confirmed", 0, 7),
		blob("plain", 7, 11),
		blob("restricted", 4),
		{Name: "broken", Err: errors.New("malformed")},
	}})
	waitLog(t, logs, "identity not served: its destinations cannot be resolved")
	st := a.srv.Status()
	var names []string
	for _, is := range st.Identities {
		names = append(names, is.Name)
	}
	if strings.Join(names, " ") != "confirmed plain" {
		t.Errorf("serving %q; want confirmed and plain", names)
	}
}
