package agentsrv

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// recorder is an Auditor and a Notifier that keeps the events.
type recorder struct{ ch chan SignEvent }

func newRecorder() *recorder             { return &recorder{ch: make(chan SignEvent, 64)} }
func (r *recorder) Audit(ev *SignEvent)  { r.ch <- *ev }
func (r *recorder) Notify(ev *SignEvent) { r.ch <- *ev }
func (r *recorder) next(t *testing.T) SignEvent {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	default:
		t.Fatal("no event")
	}
	return SignEvent{}
}
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-r.ch:
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

func TestAuditEvents(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "id@example")
	aud := newRecorder()
	ts := startServer(t, Config{Unsealer: f, Audit: aud}, Identity{Blob: k.blob})
	a := ts.dial(t)
	exe, _ := os.Executable()

	data := []byte("to be signed")
	mustSign(t, a, k.pub, data)
	ev := aud.next(t)
	if ev.Err != nil || ev.Outcome != OutcomeSigned || ev.Name != "id" || ev.Backend != KindSealed ||
		ev.Key != ssh.FingerprintSHA256(k.pub) || ev.DataSHA256 != sha256.Sum256(data) {
		t.Errorf("sign event %+v", ev)
	}
	if !ev.Peer.Known || ev.Peer.PID != os.Getpid() || ev.Peer.UID != os.Getuid() || ev.Peer.Exe != exe {
		t.Errorf("peer %+v, want pid %d exe %s", ev.Peer, os.Getpid(), exe)
	}
	if st := ts.identityStatus(t, "id"); st.LastUsed.IsZero() || !strings.Contains(st.LastPeer, "pid") {
		t.Errorf("status: last used %v by %q", st.LastUsed, st.LastPeer)
	}

	// A key the agent does not have: refused, named by fingerprint.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(other.Public())
	if _, err := a.Sign(otherPub, data); err == nil {
		t.Fatal("signed with an unknown key")
	}
	ev = aud.next(t)
	if !errors.Is(ev.Err, ErrNotFound) || ev.Outcome != "refused: unknown key" || ev.Key != ssh.FingerprintSHA256(otherPub) {
		t.Errorf("unknown key event %+v", ev)
	}

	// A software key: recorded with its comment.
	_, soft, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.Add(agent.AddedKey{PrivateKey: soft, Comment: "soft@example"}); err != nil {
		t.Fatal(err)
	}
	softPub, _ := ssh.NewPublicKey(soft.Public())
	mustSign(t, a, softPub, data)
	if ev = aud.next(t); ev.Backend != KindSoftware || ev.Name != "soft@example" || ev.Outcome != OutcomeSigned {
		t.Errorf("software key event %+v", ev)
	}

	// Locked: refused.
	if err := a.Lock([]byte("pw")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sign(k.pub, data); err == nil {
		t.Fatal("signed while locked")
	}
	if ev = aud.next(t); !errors.Is(ev.Err, ErrLocked) || ev.Outcome != "refused: agent locked" {
		t.Errorf("locked event %+v", ev)
	}
	aud.none(t)
}

func TestNotify(t *testing.T) {
	f := newFakeUnsealer()
	loud := newTestKey(t, f, "loud", "")
	quiet := newTestKey(t, f, "quiet", "")
	n := newRecorder()
	ts := startServer(t, Config{Unsealer: f, Notify: n}, Identity{Blob: loud.blob, Notify: true}, Identity{Blob: quiet.blob})
	a := ts.dial(t)
	mustSign(t, a, quiet.pub, []byte("x"))
	n.none(t)
	mustSign(t, a, loud.pub, []byte("x"))
	if ev := n.next(t); ev.Name != "loud" || ev.Peer.PID != os.Getpid() {
		t.Errorf("notified %+v", ev)
	}
	n.none(t)
}
