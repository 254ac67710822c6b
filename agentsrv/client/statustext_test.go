package client

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// statusAgent answers status@icn-agent with st and nothing else.
type statusAgent struct {
	agent.ExtendedAgent
	st *Status
}

func (a statusAgent) Extension(ext string, _ []byte) ([]byte, error) {
	if ext != ExtStatus || a.st == nil {
		return nil, agent.ErrExtensionUnsupported
	}
	return MarshalStatus(a.st), nil
}

func TestServedIdentity(t *testing.T) {
	pub, _ := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	c := &Client{agent: statusAgent{st: &Status{Identities: []IdentityStatus{{Name: "work", PublicKey: pub}}}}}
	if k, err := c.ServedIdentity("work"); err != nil || string(k.Marshal()) != string(pub.Marshal()) {
		t.Errorf("ServedIdentity(work) = %v, %v", k, err)
	}
	if _, err := c.ServedIdentity("nobody"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nobody"`) {
		t.Errorf("ServedIdentity(nobody) = %v, want ErrNotFound", err)
	}
	c.agent = statusAgent{st: &Status{Locked: true}}
	if _, err := c.ServedIdentity("work"); !errors.Is(err, ErrLocked) {
		t.Errorf("locked: %v, want ErrLocked", err)
	}
	c.agent = statusAgent{}
	if _, err := c.ServedIdentity("work"); !errors.Is(err, agent.ErrExtensionUnsupported) {
		t.Errorf("another agent: %v, want ErrExtensionUnsupported", err)
	}
}

func TestStatusWriteText(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	st := &Status{
		SoftwareKeys: 1,
		Lockout:      &LockoutStatus{Counter: 1, Max: 32},
		Identities: []IdentityStatus{
			{Name: "a", Fingerprint: "SHA256:a", Unsealed: true, Expiry: now.Add(90 * time.Second), UnsealCount: 2, LastUsed: now.Add(-time.Minute), LastPeer: "ssh (pid 1)", LastDest: "host"},
			{Name: "bb", Fingerprint: "SHA256:b", Hidden: true, PCRMismatch: []int{7, 16}, LastError: "no"},
			{Name: "c", Fingerprint: "SHA256:c", LastError: "wrong PIN"},
		},
	}
	var b strings.Builder
	if err := st.WriteText(&b, now); err != nil {
		t.Fatal(err)
	}
	want := `NAME  FINGERPRINT  STATE          EXPIRES  UNSEALS  NOTE
a     SHA256:a     unsealed       1m30s    2        -
bb    SHA256:b     sealed,hidden  -        0        PCR mismatch: 7,16
c     SHA256:c     sealed         -        0        wrong PIN
a last signed 1m0s ago for ssh (pid 1) to host
1 software key(s) added with ssh-add
TPM dictionary-attack counter: 1 of 32 (wrong PINs; at 32 every PIN identity is locked out)
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	if st.Identity("bb") != &st.Identities[1] || st.Identity("d") != nil {
		t.Error("Identity: wrong lookup")
	}
}
