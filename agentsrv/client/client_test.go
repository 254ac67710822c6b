package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/internal/didkey"
)

// socketDir returns a short-lived directory for a unix socket (t.TempDir
// can exceed the 108-byte limit of socket paths).
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "client")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestClientAgainstPlainAgent(t *testing.T) {
	// x/crypto's keyring has no extensions: every key is software.
	keyring := agent.NewKeyring()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv, Comment: "k"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(socketDir(t), "plain")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(keyring, c); c.Close() }()
		}
	}()

	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ids, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0].Backend != BackendSoftware || ids[0].HardwareBacked || ids[0].Name != "" ||
		ids[0].DIDKey != didkey.Encode(priv.Public().(ed25519.PublicKey)) {
		t.Errorf("List = %+v", ids)
	}
	if _, err := c.Status(); !errors.Is(err, agent.ErrExtensionUnsupported) {
		t.Errorf("Status = %v, want ErrExtensionUnsupported", err)
	}
	if err := c.Add("x", 0); err == nil || !strings.Contains(err.Error(), "does not support") {
		t.Errorf("Add = %v", err)
	}
}

func TestDialWithoutSocket(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	if _, err := Dial(""); err == nil || !strings.Contains(err.Error(), "SSH_AUTH_SOCK") {
		t.Errorf("Dial without SSH_AUTH_SOCK = %v", err)
	}
	if _, err := Dial(filepath.Join(socketDir(t), "none")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}

func TestStatusWireFormat(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	st := &Status{SoftwareKeys: 2, Identities: []IdentityStatus{
		{Name: "a", PublicKey: sshPub, Fingerprint: "SHA256:x", HardwareBacked: true, Unsealed: true,
			Expiry: time.Unix(1700000000, 0), UnsealCount: 3, LastError: ""},
		{Name: "b", PublicKey: sshPub, Hidden: true, LastError: "boom"},
	}}
	wire := MarshalStatus(st)
	if wire[0] != msgSuccess {
		t.Fatalf("reply starts with %d, want SSH_AGENT_SUCCESS", wire[0])
	}
	got, err := ParseStatus(wire)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Identities) != 2 || got.SoftwareKeys != 2 || !got.Identities[0].Expiry.Equal(st.Identities[0].Expiry) ||
		got.Identities[0].UnsealCount != 3 || !got.Identities[1].Hidden || got.Identities[1].LastError != "boom" {
		t.Errorf("round trip = %+v", got)
	}

	// A record with fields appended by a later version still parses.
	rec := identityRecord{Name: "c", PublicKey: sshPub.Marshal(), Extra: []byte{1, 2, 3}}
	reply := ssh.Marshal(&statusReply{Version: 1, Identities: 1,
		Records: ssh.Marshal(struct{ R []byte }{ssh.Marshal(&rec)})})
	if got, err := ParseStatus(reply); err != nil || got.Identities[0].Name != "c" {
		t.Errorf("record with extra fields: %+v, %v", got, err)
	}

	for name, bad := range map[string][]byte{
		"empty":       nil,
		"version 3":   ssh.Marshal(&statusReply{Version: 3}),
		"no lockout":  ssh.Marshal(&statusReply{Version: 2}),
		"truncated":   wire[:len(wire)-1],
		"extra":       append(append([]byte{}, wire...), 0, 0, 0, 0),
		"wrong count": ssh.Marshal(&statusReply{Version: 1, Identities: 1}),
	} {
		if _, err := ParseStatus(bad); err == nil {
			t.Errorf("%s: ParseStatus succeeded", name)
		}
	}
}
