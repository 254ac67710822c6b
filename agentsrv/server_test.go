package agentsrv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

func TestListSignVerify(t *testing.T) {
	f := newFakeUnsealer()
	alice := newTestKey(t, f, "alice", "alice@laptop")
	bob := newTestKey(t, f, "bob", "")
	carol := newTestKey(t, f, "carol", "carol's key")
	cert := newCert(t, carol.pub)
	ts := startServer(t, Config{Unsealer: f},
		Identity{Blob: carol.blob, Cert: cert},
		Identity{Blob: bob.blob},
		Identity{Blob: alice.blob},
	)
	a := ts.dial(t)

	_, softPriv, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.Add(agent.AddedKey{PrivateKey: softPriv, Comment: "soft"}); err != nil {
		t.Fatal(err)
	}
	softPub, _ := ssh.NewPublicKey(softPriv.Public())

	keys, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		blob    []byte
		comment string
	}{
		{alice.pub.Marshal(), "alice@laptop"},
		{bob.pub.Marshal(), "bob"}, // no comment: listed by name
		{carol.pub.Marshal(), "carol's key"},
		{cert.Marshal(), "carol's key"},
		{softPub.Marshal(), "soft"},
	}
	if len(keys) != len(want) {
		t.Fatalf("List returned %d keys, want %d: %v", len(keys), len(want), keys)
	}
	for i, w := range want {
		if !bytes.Equal(keys[i].Blob, w.blob) || keys[i].Comment != w.comment {
			t.Errorf("key %d = %s %q, want comment %q", i, keys[i].Format, keys[i].Comment, w.comment)
		}
	}

	data := []byte("session data to sign")
	for _, tc := range []struct {
		name string
		key  ssh.PublicKey
		priv ed25519.PrivateKey
	}{
		{"sealed", alice.pub, alice.priv},
		{"sealed without comment", bob.pub, bob.priv},
		{"certificate", cert, carol.priv},
		{"software", softPub, softPriv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := mustSign(t, a, tc.key, data)
			if sig.Format != ssh.KeyAlgoED25519 {
				t.Errorf("signature format %q, want %q", sig.Format, ssh.KeyAlgoED25519)
			}
			// Ed25519 is deterministic: the agent's signature must be
			// the standard library's.
			if want := ed25519.Sign(tc.priv, data); !bytes.Equal(sig.Blob, want) {
				t.Errorf("signature differs from crypto/ed25519's")
			}
		})
	}
	if got := f.calls.Load(); got != 3 {
		t.Errorf("Unseal called %d times, want 3 (one per sealed identity)", got)
	}

	// A key the agent does not hold.
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(other)
	if _, err := a.Sign(otherPub, data); err == nil {
		t.Error("Sign with an unknown key succeeded")
	}
	if _, err := (&conn{s: ts.Server}).Signers(); err == nil {
		t.Error("Signers succeeded")
	}
}

// newCert returns a user certificate for pub, signed by a throwaway CA.
func newCert(t testing.TB, pub ssh.PublicKey) *ssh.Certificate {
	t.Helper()
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	ca, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		t.Fatal(err)
	}
	cert := &ssh.Certificate{
		Key:             pub,
		CertType:        ssh.UserCert,
		KeyId:           "test",
		ValidPrincipals: []string{"user"},
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestConcurrentFirstSignUnsealsOnce(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	f.block = make(chan struct{})
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: k.blob})

	const n = 16
	clients := make([]agent.ExtendedAgent, n)
	for i := range clients {
		clients[i] = ts.dial(t)
	}
	var started, done sync.WaitGroup
	started.Add(n)
	errs := make([]error, n)
	for i := range n {
		done.Go(func() {
			started.Done()
			data := fmt.Appendf(nil, "data %d", i)
			sig, err := clients[i].Sign(k.pub, data)
			if err == nil {
				err = k.pub.Verify(data, sig)
			}
			errs[i] = err
		})
	}
	started.Wait()
	close(f.block)
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("Unseal called %d times, want 1", got)
	}
	if got := ts.identityStatus(t, "id").UnsealCount; got != 1 {
		t.Errorf("status unseal count %d, want 1", got)
	}
}

func TestUnsealErrorIsNotCached(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: k.blob})
	a := ts.dial(t)

	f.setFail(fmt.Errorf("tpm says no: %w", tpmseal.ErrPCRMismatch))
	if _, err := a.Sign(k.pub, []byte("x")); err == nil {
		t.Fatal("Sign succeeded while Unseal fails")
	}
	st := ts.identityStatus(t, "id")
	if st.Unsealed || !strings.Contains(st.LastError, "PCR values differ") {
		t.Errorf("status after failure: unsealed %v, last error %q", st.Unsealed, st.LastError)
	}

	f.setFail(nil)
	mustSign(t, a, k.pub, []byte("x"))
	if got := f.calls.Load(); got != 2 {
		t.Errorf("Unseal called %d times, want 2 (the failure must not be cached)", got)
	}
	if st := ts.identityStatus(t, "id"); st.LastError != "" || st.UnsealCount != 1 || !st.Unsealed {
		t.Errorf("status after success: %+v", st)
	}
}

func TestSeedMismatch(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	f.seeds["id"] = bytes.Repeat([]byte{7}, 32) // not k's seed
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: k.blob})
	if _, err := ts.dial(t).Sign(k.pub, []byte("x")); err == nil {
		t.Fatal("Sign succeeded with a seed of another key")
	}
	if st := ts.identityStatus(t, "id"); !strings.Contains(st.LastError, "sealed seed does not match public key") || st.Unsealed {
		t.Errorf("status: %+v", st)
	}
}

func TestExpiryOnAccess(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	clock := newFakeClock()
	ts := startServer(t, Config{Unsealer: f, AutoLockTimeout: time.Hour, Now: clock.Now}, Identity{Blob: k.blob})
	a := ts.dial(t)

	mustSign(t, a, k.pub, []byte("1"))
	st := ts.identityStatus(t, "id")
	if want := clock.Now().Add(time.Hour); !st.Unsealed || !st.Expiry.Equal(want) {
		t.Errorf("status: unsealed %v expiry %v, want true %v", st.Unsealed, st.Expiry, want)
	}
	clock.Advance(59 * time.Minute)
	mustSign(t, a, k.pub, []byte("2"))
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("Unseal called %d times before expiry, want 1", got)
	}
	clock.Advance(2 * time.Minute)
	mustSign(t, a, k.pub, []byte("3"))
	if got := f.calls.Load(); got != 2 {
		t.Errorf("Unseal called %d times after expiry, want 2", got)
	}
}

// The expiry timer runs on the fake clock of a synctest bubble: the test
// sees the seed dropped at its deadline, and not before.
func TestExpiryTimerZeroizesWithoutTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeUnsealer()
		k := newTestKey(t, f, "id", "")
		s := pipeServer(t, Config{Unsealer: f, AutoLockTimeout: 50 * time.Millisecond}, Identity{Blob: k.blob})
		a := s.pipeClient(t)

		mustSign(t, a, k.pub, []byte("1"))
		e := s.sealedEntry(t, "id")
		e.mu.RLock()
		buf := e.key
		e.mu.RUnlock()
		if buf == nil {
			t.Fatal("no seed cached after a signature")
		}
		time.Sleep(50*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if !s.identityStatus(t, "id").Unsealed {
			t.Fatal("seed dropped before the auto-lock timeout")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if s.identityStatus(t, "id").Unsealed {
			t.Fatal("seed still cached at the auto-lock timeout")
		}
		if buf.Len() != 0 || buf.Bytes() != nil {
			t.Error("expired seed buffer was not destroyed")
		}
		mustSign(t, a, k.pub, []byte("2"))
		if got := f.calls.Load(); got != 2 {
			t.Errorf("Unseal called %d times, want 2", got)
		}
	})
}

func TestLockUnlock(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	var sleeps []time.Duration
	var mu sync.Mutex
	sleep := func(_ context.Context, d time.Duration) {
		mu.Lock()
		sleeps = append(sleeps, d)
		mu.Unlock()
	}
	ts := startServer(t, Config{Unsealer: f, Sleep: sleep}, Identity{Blob: k.blob})
	a := ts.dial(t)
	mustSign(t, a, k.pub, []byte("warm"))
	e := ts.sealedEntry(t, "id")
	e.mu.RLock()
	buf := e.key
	e.mu.RUnlock()

	if err := a.Lock(nil); err == nil {
		t.Error("Lock with an empty passphrase succeeded")
	}
	if err := a.Unlock([]byte("pw")); err == nil {
		t.Error("Unlock of an unlocked agent succeeded")
	}
	if err := a.Lock([]byte("correct horse")); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if buf.Bytes() != nil {
		t.Error("Lock left the seed buffer in place")
	}
	if st := ts.identityStatus(t, "id"); st.Unsealed {
		t.Error("status says unsealed after Lock")
	}
	if err := a.Lock([]byte("again")); err == nil {
		t.Error("Lock of a locked agent succeeded")
	}

	// While locked.
	if got := listBlobs(t, a); len(got) != 0 {
		t.Errorf("List while locked = %v, want empty", got)
	}
	if _, err := a.Sign(k.pub, []byte("x")); err == nil {
		t.Error("Sign while locked succeeded")
	}
	_, softPriv, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.Add(agent.AddedKey{PrivateKey: softPriv}); err == nil {
		t.Error("Add while locked succeeded")
	}
	if err := a.Remove(k.pub); err == nil {
		t.Error("Remove while locked succeeded")
	}
	if _, err := a.Extension(ExtUnseal, ssh.Marshal(&unsealRequest{Name: "id"})); err == nil {
		t.Error("unseal extension while locked succeeded")
	}
	if _, err := a.Extension(ExtQuery, nil); err != nil {
		t.Errorf("query while locked: %v", err)
	}
	reply, err := a.Extension(ExtStatus, nil)
	if err != nil {
		t.Fatalf("status while locked: %v", err)
	}
	if st, err := client.ParseStatus(reply); err != nil || !st.Locked || len(st.Identities) != 0 {
		t.Errorf("status while locked = %+v, %v; want locked and nothing listed", st, err)
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("Unseal called %d times, want 1", got)
	}

	// Wrong passphrases are slowed down, more each time.
	for range 2 {
		if err := a.Unlock([]byte("wrong")); err == nil {
			t.Fatal("Unlock with a wrong passphrase succeeded")
		}
	}
	mu.Lock()
	if want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}; !slices.Equal(sleeps, want) {
		t.Errorf("sleeps after wrong passphrases = %v, want %v", sleeps, want)
	}
	mu.Unlock()

	if err := a.Unlock([]byte("correct horse")); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if got := listBlobs(t, a); !slices.Equal(got, []string{"id"}) {
		t.Errorf("List after Unlock = %v", got)
	}
	mustSign(t, a, k.pub, []byte("after unlock"))
	if got := f.calls.Load(); got != 2 {
		t.Errorf("Unseal called %d times, want 2 (the seed was dropped by Lock)", got)
	}

	// The failure count restarts after a successful unlock.
	if err := a.Lock([]byte("pw2")); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock([]byte("nope")); err == nil {
		t.Fatal("Unlock with a wrong passphrase succeeded")
	}
	mu.Lock()
	if last := sleeps[len(sleeps)-1]; last != 100*time.Millisecond {
		t.Errorf("first failure after a successful unlock slept %v, want 100ms", last)
	}
	mu.Unlock()
}

func TestUnlockDelayIsCapped(t *testing.T) {
	var last time.Duration
	s := New(Config{Logger: testLogger(t), Sleep: func(_ context.Context, d time.Duration) { last = d }})
	defer s.Close()
	if err := s.lock([]byte("pw")); err != nil {
		t.Fatal(err)
	}
	s.failures = 150
	if err := s.unlock(context.Background(), []byte("bad")); !errors.Is(err, errBadPassphrase) {
		t.Fatalf("unlock: %v", err)
	}
	if last != 10*time.Second {
		t.Errorf("delay after 151 failures = %v, want 10s", last)
	}
}

func TestAddSoftwareKeys(t *testing.T) {
	f := newFakeUnsealer()
	sealedKey := newTestKey(t, f, "id", "")
	clock := newFakeClock()

	dir := socketDir(t)
	yes := filepath.Join(dir, "yes")
	no := filepath.Join(dir, "no")
	if err := os.WriteFile(yes, []byte("#!/bin/sh\n[ \"$SSH_ASKPASS_PROMPT\" = confirm ] || exit 3\nexit 0\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(no, []byte("#!/bin/sh\nexit 1\n"), 0o700); err != nil {
		t.Fatal(err)
	}

	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPriv, _ := rsa.GenerateKey(rand.Reader, 2048)

	tests := []struct {
		name    string
		askPass string
		key     agent.AddedKey
		addErr  string // substring; "" means Add succeeds
		signErr bool
	}{
		{name: "ed25519", key: agent.AddedKey{PrivateKey: edPriv, Comment: "ed"}},
		{name: "ecdsa", key: agent.AddedKey{PrivateKey: ecPriv}},
		{name: "rsa", key: agent.AddedKey{PrivateKey: rsaPriv}},
		{name: "confirm without askpass", key: agent.AddedKey{PrivateKey: edPriv, ConfirmBeforeUse: true}, addErr: "askpass"},
		{name: "confirm allowed", askPass: yes, key: agent.AddedKey{PrivateKey: edPriv, ConfirmBeforeUse: true}},
		{name: "confirm denied", askPass: no, key: agent.AddedKey{PrivateKey: edPriv, ConfirmBeforeUse: true}, signErr: true},
		{name: "unknown constraint", key: agent.AddedKey{PrivateKey: edPriv, ConstraintExtensions: []agent.ConstraintExtension{
			{ExtensionName: "no-such-constraint@example.com", ExtensionDetails: []byte{0, 0, 0, 0}},
		}}, addErr: "constraint"},
		{name: "copy of a sealed identity", key: agent.AddedKey{PrivateKey: sealedKey.priv}, addErr: "sealed identity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Config{Unsealer: f, AskPass: tc.askPass, Now: clock.Now}, Identity{Blob: sealedKey.blob})
			// The error text does not cross the protocol; check it on
			// the server side, then through a client.
			err := ts.Server.addSoft(tc.key)
			if tc.addErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.addErr) {
					t.Fatalf("add: %v, want an error about %q", err, tc.addErr)
				}
				if err := ts.dial(t).Add(tc.key); err == nil {
					t.Fatal("Add through the protocol succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := ts.dial(t)
			if err := a.Add(tc.key); err != nil { // re-adding replaces
				t.Fatal(err)
			}
			keys, err := a.List()
			if err != nil || len(keys) != 2 {
				t.Fatalf("List = %v, %v; want the sealed key and the software key", keys, err)
			}
			soft := keys[1]
			if soft.Comment != tc.key.Comment {
				t.Errorf("comment %q, want %q", soft.Comment, tc.key.Comment)
			}
			data := []byte("data")
			sig, err := a.Sign(soft, data)
			if tc.signErr {
				if err == nil {
					t.Fatal("Sign succeeded although confirmation was denied")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := soft.Verify(data, sig); err != nil {
				t.Fatal(err)
			}
			if tc.name == "rsa" {
				sig, err := a.SignWithFlags(soft, data, agent.SignatureFlagRsaSha512)
				if err != nil || sig.Format != ssh.KeyAlgoRSASHA512 {
					t.Fatalf("SignWithFlags(SHA-512) = %v, %v", sig, err)
				}
			}
		})
	}
}

// The lifetime timer runs on the fake clock of a synctest bubble.
func TestSoftwareKeyLifetime(t *testing.T) {
	synctest.Test(t, testSoftwareKeyLifetime)
}

func testSoftwareKeyLifetime(t *testing.T) {
	clock := newFakeClock()
	ts := pipeServer(t, Config{Unsealer: newFakeUnsealer(), Now: clock.Now})
	a := ts.pipeClient(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(priv.Public())

	// By the wall clock, checked on access.
	if err := a.Add(agent.AddedKey{PrivateKey: priv, Comment: "short", LifetimeSecs: 3600}); err != nil {
		t.Fatal(err)
	}
	if got := listBlobs(t, a); !slices.Equal(got, []string{"short"}) {
		t.Fatalf("List = %v", got)
	}
	clock.Advance(3601 * time.Second)
	if got := listBlobs(t, a); len(got) != 0 {
		t.Errorf("List after the lifetime = %v, want empty", got)
	}
	if _, err := a.Sign(pub, []byte("x")); err == nil {
		t.Error("Sign with an expired key succeeded")
	}

	// By the timer, without traffic (the wall clock stands still).
	if err := a.Add(agent.AddedKey{PrivateKey: priv, Comment: "one second", LifetimeSecs: 1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second - time.Nanosecond)
	synctest.Wait()
	if n := ts.Status().SoftwareKeys; n != 1 {
		t.Fatalf("%d software keys before the lifetime ended, want 1", n)
	}
	time.Sleep(time.Nanosecond)
	synctest.Wait()
	if n := ts.Status().SoftwareKeys; n != 0 {
		t.Errorf("%d software keys once the lifetime ended, want 0", n)
	}
}

func TestRemoveHidesSealedIdentity(t *testing.T) {
	f := newFakeUnsealer()
	a1 := newTestKey(t, f, "a", "")
	b1 := newTestKey(t, f, "b", "")
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: a1.blob}, Identity{Blob: b1.blob})
	c := ts.dial(t)

	mustSign(t, c, a1.pub, []byte("x"))
	bufBytes := ts.cachedKeyBytes(t, "a")
	if bufBytes == nil {
		t.Fatal("no seed cached")
	}
	if err := c.Remove(a1.pub); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got := listBlobs(t, c); !slices.Equal(got, []string{"b"}) {
		t.Errorf("List after Remove = %v, want [b]", got)
	}
	if ts.cachedKeyBytes(t, "a") != nil {
		t.Error("Remove left the seed cached")
	}
	if _, err := c.Sign(a1.pub, []byte("x")); err == nil {
		t.Error("Sign with a removed identity succeeded")
	}
	if err := c.Remove(a1.pub); err == nil {
		t.Error("removing a hidden identity again succeeded")
	}
	if !ts.identityStatus(t, "a").Hidden {
		t.Error("status does not say hidden")
	}

	if err := ts.Restore("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Restore(unknown) = %v, want ErrNotFound", err)
	}
	if err := ts.Restore("a"); err != nil {
		t.Fatal(err)
	}
	if got := listBlobs(t, c); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("List after Restore = %v", got)
	}
	mustSign(t, c, a1.pub, []byte("x"))

	// RemoveAll hides every identity and deletes software keys.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := c.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if got := listBlobs(t, c); len(got) != 0 {
		t.Errorf("List after RemoveAll = %v", got)
	}
	if st := ts.Status(); st.SoftwareKeys != 0 {
		t.Errorf("%d software keys after RemoveAll", st.SoftwareKeys)
	}

	// The unseal extension brings an identity back.
	if _, err := c.Extension(ExtUnseal, ssh.Marshal(&unsealRequest{Name: "b"})); err != nil {
		t.Fatalf("unseal extension: %v", err)
	}
	if got := listBlobs(t, c); !slices.Equal(got, []string{"b"}) {
		t.Errorf("List after unseal of b = %v", got)
	}

	// So does a new blob for it.
	a2 := *a1.blob
	a2.Private = []byte("resealed")
	if err := ts.SetIdentities([]Identity{{Blob: &a2}, {Blob: b1.blob}}); err != nil {
		t.Fatal(err)
	}
	if got := listBlobs(t, c); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("List after a new blob for a = %v", got)
	}
}

func TestSetIdentities(t *testing.T) {
	f := newFakeUnsealer()
	keep := newTestKey(t, f, "keep", "")
	change := newTestKey(t, f, "change", "")
	gone := newTestKey(t, f, "gone", "")
	ts := startServer(t, Config{Unsealer: f},
		Identity{Blob: keep.blob}, Identity{Blob: change.blob}, Identity{Blob: gone.blob})
	c := ts.dial(t)
	for _, k := range []*testKey{keep, change, gone} {
		mustSign(t, c, k.pub, []byte("x"))
	}
	goneBuf := ts.sealedEntry(t, "gone")
	goneBuf.mu.RLock()
	goneKey := goneBuf.key
	goneBuf.mu.RUnlock()

	keep2 := *keep.blob // same material, new comment: a fresh parse
	keep2.Comment = "renamed"
	change2 := *change.blob
	change2.Public = []byte("another public area")
	newer := newTestKey(t, f, "new", "")
	bad := newTestKey(t, nil, "bad", "")
	bad.blob.PublicKey = mustECDSAKey(t)
	dup := *keep.blob
	dup.Name = "dup"

	err := ts.SetIdentities([]Identity{
		{Blob: &keep2}, {Blob: &change2}, {Blob: newer.blob},
		{Blob: bad.blob}, {Blob: &dup}, {Blob: nil},
		{Blob: newer.blob},
		{Blob: keep.blob, Cert: newCert(t, change.pub)},
	})
	if err == nil {
		t.Fatal("SetIdentities accepted invalid identities")
	}
	for _, want := range []string{`"bad"`, `"dup"`, "no blob", "duplicate name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}

	st := ts.Status()
	var names []string
	for _, is := range st.Identities {
		names = append(names, is.Name)
	}
	if !slices.Equal(names, []string{"change", "keep", "new"}) {
		t.Fatalf("identities = %v", names)
	}
	if is := ts.identityStatus(t, "keep"); !is.Unsealed || is.UnsealCount != 1 {
		t.Errorf("unchanged identity lost its seed: %+v", is)
	}
	if got := listBlobs(t, c); !slices.Contains(got, "renamed") {
		t.Errorf("new comment not listed: %v", got)
	}
	if is := ts.identityStatus(t, "change"); is.Unsealed || is.UnsealCount != 0 {
		t.Errorf("changed identity kept its seed: %+v", is)
	}
	if goneKey.Bytes() != nil {
		t.Error("removed identity's seed buffer not destroyed")
	}
	mustSign(t, c, keep.pub, []byte("y"))
	if _, err := c.Sign(gone.pub, []byte("y")); err == nil {
		t.Error("Sign with a removed identity succeeded")
	}
	if got := f.calls.Load(); got != 3 {
		t.Errorf("Unseal called %d times, want 3", got)
	}
}

func mustECDSAKey(t testing.TB) ssh.PublicKey {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestSealedIdentityReplacesSoftwareCopy(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	ts := startServer(t, Config{Unsealer: f})
	c := ts.dial(t)
	if err := c.Add(agent.AddedKey{PrivateKey: k.priv, Comment: "soft copy"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.SetIdentities([]Identity{{Blob: k.blob}}); err != nil {
		t.Fatal(err)
	}
	if got := listBlobs(t, c); !slices.Equal(got, []string{"id"}) {
		t.Errorf("List = %v, want only the sealed identity", got)
	}
	mustSign(t, c, k.pub, []byte("x"))
	if f.calls.Load() != 1 {
		t.Error("signature did not come from the sealed identity")
	}
}

func TestExtensions(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	clock := newFakeClock()
	ts := startServer(t, Config{Unsealer: f, AutoLockTimeout: time.Hour, Now: clock.Now}, Identity{Blob: k.blob})
	c := ts.dial(t)

	if _, err := c.Extension("nope@example.com", nil); !errors.Is(err, agent.ErrExtensionUnsupported) {
		t.Errorf("unknown extension: %v, want ErrExtensionUnsupported", err)
	}

	cl, err := client.Dial(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	names, err := cl.Extensions()
	if err != nil || !slices.Equal(names, supportedExtensions) {
		t.Errorf("query = %v, %v; want %v", names, err, supportedExtensions)
	}

	status := func() IdentityStatus {
		t.Helper()
		reply, err := c.Extension(ExtStatus, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := client.ParseStatus(reply)
		if err != nil {
			t.Fatal(err)
		}
		if st.Locked || len(st.Identities) != 1 {
			t.Fatalf("status = %+v", st)
		}
		return st.Identities[0]
	}
	if is := status(); is.Unsealed || is.UnsealCount != 0 || !is.HardwareBacked || is.Name != "id" ||
		!bytes.Equal(is.PublicKey.Marshal(), k.pub.Marshal()) || is.Fingerprint != ssh.FingerprintSHA256(k.pub) {
		t.Errorf("status before unseal = %+v", is)
	}

	for _, tc := range []struct {
		name    string
		req     []byte
		wantErr bool
	}{
		{"malformed", []byte{1, 2}, true},
		{"trailing data", append(ssh.Marshal(&unsealRequest{Name: "id"}), 0), true},
		{"unknown name", ssh.Marshal(&unsealRequest{Name: "other"}), true},
		{"default lifetime", ssh.Marshal(&unsealRequest{Name: "id"}), false},
	} {
		_, err := c.Extension(ExtUnseal, tc.req)
		if (err != nil) != tc.wantErr {
			t.Errorf("unseal %s: %v", tc.name, err)
		}
	}
	is := status()
	if !is.Unsealed || is.UnsealCount != 1 || !is.Expiry.Equal(clock.Now().Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("status after unseal = %+v", is)
	}

	// A second unseal with a lifetime resets the expiry without the TPM.
	clock.Advance(time.Minute)
	if _, err := c.Extension(ExtUnseal, ssh.Marshal(&unsealRequest{Name: "id", LifetimeSecs: 30})); err != nil {
		t.Fatal(err)
	}
	is = status()
	if is.UnsealCount != 1 || !is.Expiry.Equal(clock.Now().Add(30*time.Second)) {
		t.Errorf("status after re-unseal = %+v", is)
	}
	if f.calls.Load() != 1 {
		t.Errorf("Unseal called %d times, want 1", f.calls.Load())
	}
}

func TestSessionBind(t *testing.T) {
	ts := startServer(t, Config{Unsealer: newFakeUnsealer()})
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	host, _ := ssh.NewSignerFromKey(hostPriv)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewSignerFromKey(otherPriv)

	bind := func(signer, claimed ssh.Signer, sid []byte, fwd bool) []byte {
		sig, err := signer.Sign(rand.Reader, sid)
		if err != nil {
			t.Fatal(err)
		}
		return ssh.Marshal(&sessionBindRequest{
			HostKey:    claimed.PublicKey().Marshal(),
			SessionID:  sid,
			Signature:  ssh.Marshal(sig),
			Forwarding: fwd,
		})
	}
	sid1 := bytes.Repeat([]byte{1}, 32)
	sid2 := bytes.Repeat([]byte{2}, 32)

	tests := []struct {
		name  string
		steps [][]byte
		ok    []bool
	}{
		{"valid", [][]byte{bind(host, host, sid1, false)}, []bool{true}},
		{"signed by another key", [][]byte{bind(other, host, sid1, false)}, []bool{false}},
		{"signature over another session", [][]byte{
			ssh.Marshal(&sessionBindRequest{HostKey: host.PublicKey().Marshal(), SessionID: sid2,
				Signature: ssh.Marshal(mustSignerSign(t, host, sid1))}),
		}, []bool{false}},
		{"malformed", [][]byte{{0, 0, 0, 9, 1}}, []bool{false}},
		{"forwarding then auth", [][]byte{bind(host, host, sid1, true), bind(host, host, sid2, false)}, []bool{true, true}},
		{"nothing after auth", [][]byte{bind(host, host, sid1, false), bind(host, host, sid2, true)}, []bool{true, false}},
		{"same binding twice", [][]byte{bind(host, host, sid1, true), bind(host, host, sid1, true)}, []bool{true, true}},
		{"session bound to another key", [][]byte{bind(host, host, sid1, true), bind(other, other, sid1, true)}, []bool{true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial(t) // bindings are per connection
			for i, req := range tc.steps {
				reply, err := c.Extension(ExtSessionBind, req)
				if tc.ok[i] {
					if err != nil || !bytes.Equal(reply, []byte{msgSuccess}) {
						t.Errorf("step %d: reply %v, %v; want success", i, reply, err)
					}
				} else if err == nil || errors.Is(err, agent.ErrExtensionUnsupported) {
					t.Errorf("step %d: %v, want an extension failure", i, err)
				}
			}
		})
	}
}

func mustSignerSign(t testing.TB, s ssh.Signer, data []byte) *ssh.Signature {
	sig, err := s.Sign(rand.Reader, data)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestOversizedRequestClosesOnlyThatConnection(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: k.blob})
	good := ts.dial(t)
	mustSign(t, good, k.pub, []byte("before"))

	bad, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	// A sign request with 300 KiB of data: over the 256 KiB default.
	req := ssh.Marshal(struct {
		Type  byte
		Key   []byte
		Data  []byte
		Flags uint32
	}{13, k.pub.Marshal(), make([]byte, 300<<10), 0})
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
	go bad.Write(append(frame, req...)) // the server stops reading: do not block on it
	bad.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Closed with our request unread, the socket may report a reset.
	if n, err := bad.Read(make([]byte, 16)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("oversized request: read %d bytes, %v; want the connection closed (EOF)", n, err)
	}

	mustSign(t, good, k.pub, []byte("after"))
	// A request just under the limit is served.
	mustSign(t, good, k.pub, make([]byte, 200<<10))
}

func TestDisallowedPeerIsRefused(t *testing.T) {
	var asked []uint32
	var mu sync.Mutex
	ts := startServer(t, Config{Unsealer: newFakeUnsealer(), AllowUID: func(uid uint32) bool {
		mu.Lock()
		asked = append(asked, uid)
		mu.Unlock()
		return false
	}})
	if _, err := ts.dial(t).List(); err == nil {
		t.Fatal("List from a disallowed uid succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(asked, []uint32{uint32(os.Getuid())}) {
		t.Errorf("AllowUID asked about %v, want our uid %d", asked, os.Getuid())
	}
}

func TestServeShutdown(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	s := New(Config{Unsealer: f, Logger: testLogger(t)})
	if err := s.SetIdentities([]Identity{{Blob: k.blob}}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(socketDir(t), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()

	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := agent.NewClient(conn)
	mustSign(t, c, k.pub, []byte("x"))
	buf := s.cachedKeyBytes(t, "id")
	if buf == nil {
		t.Fatal("no seed cached")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v, want nil", err)
	}
	if s.cachedKeyBytes(t, "id") != nil {
		t.Error("seed still cached after Serve returned")
	}
	if _, err := c.List(); err == nil {
		t.Error("connection still served after shutdown")
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("listener still accepting after shutdown")
	}

	s.Close()
	if err := s.Serve(context.Background(), mustListen(t)); err == nil {
		t.Error("Serve after Close succeeded")
	}
}

func mustListen(t testing.TB) net.Listener {
	l, err := net.Listen("unix", filepath.Join(socketDir(t), "l"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestServeConnOverPipe(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	s := New(Config{Unsealer: f, Logger: testLogger(t)})
	defer s.Close()
	if err := s.SetIdentities([]Identity{{Blob: k.blob}}); err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { s.ServeConn(context.Background(), server); close(done) }()
	mustSign(t, agent.NewClient(client), k.pub, []byte("x"))
	client.Close()
	<-done
}

func TestDropAll(t *testing.T) {
	f := newFakeUnsealer()
	a := newTestKey(t, f, "a", "")
	b := newTestKey(t, f, "b", "")
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: a.blob}, Identity{Blob: b.blob})
	c := ts.dial(t)
	mustSign(t, c, a.pub, []byte("x"))
	mustSign(t, c, b.pub, []byte("x"))
	ts.DropAll()
	for _, n := range []string{"a", "b"} {
		if ts.cachedKeyBytes(t, n) != nil {
			t.Errorf("%s still cached after DropAll", n)
		}
	}
	mustSign(t, c, a.pub, []byte("x"))
	if f.calls.Load() != 3 {
		t.Errorf("Unseal called %d times, want 3", f.calls.Load())
	}
}

// A lock that lands while an unseal is in flight must win: the seed the
// TPM returns afterwards is discarded, not cached.
func TestLockDuringUnsealDiscardsSeed(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	f.block = make(chan struct{})
	f.entered = make(chan string, 1)
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: k.blob})
	signer, locker := ts.dial(t), ts.dial(t)

	errc := make(chan error, 1)
	go func() {
		_, err := signer.Sign(k.pub, []byte("x"))
		errc <- err
	}()
	<-f.entered
	if err := locker.Lock([]byte("pw")); err != nil {
		t.Fatal(err)
	}
	close(f.block)
	if err := <-errc; err == nil {
		t.Error("Sign succeeded although the agent was locked during the unseal")
	}
	if ts.cachedKeyBytes(t, "id") != nil {
		t.Error("seed cached while locked")
	}
}
