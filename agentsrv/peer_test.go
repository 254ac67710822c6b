package agentsrv

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func hashedName(salt []byte, name string) string {
	m := hmac.New(sha1.New, salt)
	m.Write([]byte(name))
	return "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestKnownHostsLookup(t *testing.T) {
	newKey := func() ssh.PublicKey {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		k, _ := ssh.NewPublicKey(pub)
		return k
	}
	plain, hashed, ported, absent := newKey(), newKey(), newKey(), newKey()
	line := func(host string, k ssh.PublicKey) string {
		return host + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
	}
	salt := []byte("0123456789abcdef0123")
	kh := strings.Join([]string{
		"# comment",
		line("plain.example,10.0.0.1", plain),
		line(hashedName(salt, "secret.example"), hashed),
		line(hashedName(salt, "[other.example]:2222"), ported),
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(kh), 0o600); err != nil {
		t.Fatal(err)
	}
	look := KnownHostsLookup(filepath.Join(t.TempDir(), "missing"), path)
	for _, tc := range []struct {
		key     ssh.PublicKey
		cmdline string
		want    string
	}{
		{plain, "ssh somewhere", "plain.example"},
		{hashed, "ssh -v me@secret.example uptime", "secret.example"},
		{hashed, "ssh elsewhere", ""},
		{ported, "ssh -p 2222 other.example", "[other.example]:2222"},
		{absent, "ssh plain.example", ""},
	} {
		if got := look(tc.key, Peer{Known: true, Cmdline: tc.cmdline}); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.cmdline, got, tc.want)
		}
	}
}

func TestPeerString(t *testing.T) {
	p := Peer{Known: true, UID: 1000, PID: 42, Cmdline: "ssh host"}
	if got := p.String(); got != "ssh host (pid 42, uid 1000)" {
		t.Errorf("got %q", got)
	}
	d := Destination{HostKey: "SHA256:x", Host: "h"}
	if got := d.String(); got != "h (SHA256:x)" {
		t.Errorf("got %q", got)
	}
}
