package agentsrv

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestMatchPattern(t *testing.T) {
	for _, tc := range []struct {
		s, p string
		want bool
	}{
		{"root", "root", true}, {"root", "ro*", true}, {"root", "*", true}, {"root", "r??t", true},
		{"root", "r?t", false}, {"root", "admin", false}, {"", "*", true}, {"a", "", false},
	} {
		if got := matchPattern(tc.s, tc.p); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v", tc.s, tc.p, got)
		}
	}
}

func TestIdentityPermitted(t *testing.T) {
	key := func() ssh.PublicKey {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		k, _ := ssh.NewPublicKey(pub)
		return k
	}
	a, b, x := key(), key(), key()
	hop := func(host string, k ssh.PublicKey) destHop {
		return destHop{hostname: host, keys: []hopKey{{key: k}}}
	}
	toA := destConstraint{to: hop("a", a)}
	aToB := destConstraint{from: hop("a", a), to: hop("b", b)}
	aToB.to.user = "ro*"
	auth := func(k ssh.PublicKey) sessionBinding { return sessionBinding{hostKey: k} }
	fwd := func(k ssh.PublicKey) sessionBinding { return sessionBinding{hostKey: k, forwarding: true} }
	now := time.Now()
	for _, tc := range []struct {
		name     string
		dcs      []destConstraint
		bindings []sessionBinding
		tried    bool
		signing  bool
		user     string
		ok       bool
	}{
		{name: "unconstrained", bindings: []sessionBinding{auth(x)}, signing: true, ok: true},
		{name: "local use", dcs: []destConstraint{toA}, ok: true},
		{name: "failed bind", dcs: []destConstraint{toA}, tried: true},
		{name: "to a", dcs: []destConstraint{toA}, bindings: []sessionBinding{auth(a)}, signing: true, user: "u", ok: true},
		{name: "to x", dcs: []destConstraint{toA}, bindings: []sessionBinding{auth(x)}, signing: true, user: "u"},
		{name: "sign on forwarding hop", dcs: []destConstraint{toA}, bindings: []sessionBinding{fwd(a)}, signing: true, user: "u"},
		{name: "listed at a, not beyond", dcs: []destConstraint{toA}, bindings: []sessionBinding{fwd(a)}},
		{name: "listed at a for b", dcs: []destConstraint{toA, aToB}, bindings: []sessionBinding{fwd(a)}, ok: true},
		{name: "a then b", dcs: []destConstraint{toA, aToB}, bindings: []sessionBinding{fwd(a), auth(b)}, signing: true, user: "root", ok: true},
		{name: "a then b, wrong user", dcs: []destConstraint{toA, aToB}, bindings: []sessionBinding{fwd(a), auth(b)}, signing: true, user: "admin"},
		{name: "a then b, not allowed", dcs: []destConstraint{toA}, bindings: []sessionBinding{fwd(a), auth(b)}, signing: true, user: "root"},
		{name: "through an auth binding", dcs: []destConstraint{toA, aToB}, bindings: []sessionBinding{auth(a), auth(b)}, signing: true, user: "root"},
	} {
		err := identityPermitted(tc.dcs, tc.bindings, tc.tried, tc.signing, tc.user, now)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrNotPermitted)) {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
