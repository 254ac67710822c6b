package client

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// statusAgent answers status@icn-agent with st and metrics@icn-agent
// with metrics, if set, and nothing else.
type statusAgent struct {
	agent.ExtendedAgent
	st      *Status
	metrics string
}

func (a statusAgent) Extension(ext string, _ []byte) ([]byte, error) {
	switch {
	case ext == ExtStatus && a.st != nil:
		return MarshalStatus(a.st), nil
	case ext == ExtMetrics && a.metrics != "":
		return ssh.Marshal(&metricsReply{JSON: a.metrics}), nil
	}
	return nil, agent.ErrExtensionUnsupported
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

func TestClientStatusJSON(t *testing.T) {
	pub, _ := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	st := &Status{Identities: []IdentityStatus{{Name: "work", PublicKey: pub, Fingerprint: "SHA256:w"}}}
	for _, c := range []struct {
		a    statusAgent
		want string
	}{
		{statusAgent{st: st, metrics: `{"signs":1}`}, `{"locked":false,"software_keys":0,"identities":[{"name":"work","fingerprint":"SHA256:w","unsealed":false,"unseal_count":0,"hidden":false}],"metrics":{"signs":1}}`},
		{statusAgent{st: st}, `{"locked":false,"software_keys":0,"identities":[{"name":"work","fingerprint":"SHA256:w","unsealed":false,"unseal_count":0,"hidden":false}]}`},
		{statusAgent{st: &Status{Locked: true}, metrics: `{"signs":1}`}, `{"locked":true,"software_keys":0,"identities":[]}`},
	} {
		j, err := (&Client{agent: c.a}).StatusJSON()
		got, _ := json.Marshal(j)
		if err != nil || string(got) != c.want {
			t.Errorf("StatusJSON = %s, %v\nwant %s", got, err, c.want)
		}
	}
	if _, err := (&Client{agent: statusAgent{st: st, metrics: "not json"}}).StatusJSON(); err == nil {
		t.Error("malformed metrics: no error")
	}
}
