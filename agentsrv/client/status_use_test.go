package client

import (
	"crypto/ed25519"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The last use of an identity rides in the record's extension space:
// it round-trips, and a record without it still parses.
func TestStatusLastUse(t *testing.T) {
	pub, _ := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	when := time.Unix(1700000000, 0)
	st := &Status{Identities: []IdentityStatus{
		{Name: "a", PublicKey: pub, LastUsed: when, LastPeer: "ssh host (pid 1, uid 2)", LastDest: "host (SHA256:x)"},
		{Name: "b", PublicKey: pub},
	}}
	got, err := ParseStatus(MarshalStatus(st))
	if err != nil {
		t.Fatal(err)
	}
	a, b := got.Identities[0], got.Identities[1]
	if !a.LastUsed.Equal(when) || a.LastPeer != st.Identities[0].LastPeer || a.LastDest != st.Identities[0].LastDest {
		t.Errorf("last use = %v %q %q", a.LastUsed, a.LastPeer, a.LastDest)
	}
	if !b.LastUsed.IsZero() || b.LastPeer != "" {
		t.Errorf("never used, got %v %q", b.LastUsed, b.LastPeer)
	}
}
