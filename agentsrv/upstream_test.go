package agentsrv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// serveUpstream serves a on a fresh socket until the test ends and
// returns its path.
func serveUpstream(t *testing.T, a agent.Agent) string {
	t.Helper()
	path := filepath.Join(socketDir(t), "upstream.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				agent.ServeAgent(a, c)
			}()
		}
	}()
	return path
}

// rawUpstream is an upstream agent answering request bodies with
// handle, and recording them.
type rawUpstream struct {
	mu     sync.Mutex
	bodies [][]byte
	handle func(body []byte) []byte
}

func (u *rawUpstream) requests() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.bodies...)
}

func serveRaw(t *testing.T, u *rawUpstream) string {
	t.Helper()
	path := filepath.Join(socketDir(t), "raw.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					body, err := readUpFrame(c)
					if err != nil {
						return
					}
					u.mu.Lock()
					u.bodies = append(u.bodies, body)
					u.mu.Unlock()
					if _, err := c.Write(upFrame(u.handle(body))); err != nil {
						return
					}
				}
			}()
		}
	}()
	return path
}

func upFrame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func readUpFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(r, body)
	return body, err
}

// upRoundTrip sends one raw request body to the agent at path.
func upRoundTrip(t *testing.T, path string, body []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(upFrame(body)); err != nil {
		t.Fatal(err)
	}
	reply, err := readUpFrame(c)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

func sshString(s []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

func TestUpstreamListSignLock(t *testing.T) {
	f := newFakeUnsealer()
	own := newTestKey(t, f, "own", "own comment")
	ring := agent.NewKeyring()
	_, upEd, _ := ed25519.GenerateKey(rand.Reader)
	upRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []any{upEd, upRSA} {
		if err := ring.Add(agent.AddedKey{PrivateKey: k, Comment: "upstream"}); err != nil {
			t.Fatal(err)
		}
	}
	up := serveUpstream(t, ring)
	rec := newRecorder()
	ts := startServer(t, Config{Unsealer: f, Upstreams: []string{up}, Audit: rec}, Identity{Blob: own.blob})
	a := ts.dial(t)

	keys, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || !bytes.Equal(keys[0].Blob, own.pub.Marshal()) || keys[1].Comment != "upstream" || keys[2].Comment != "upstream" {
		t.Fatalf("list = %v, want the own key, then the upstream's two", keys)
	}
	data := []byte("data to sign")
	for _, k := range keys {
		pub, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			t.Fatal(err)
		}
		sig := mustSign(t, a, pub, data)
		if err := pub.Verify(data, sig); err != nil {
			t.Errorf("%s: %v", pub.Type(), err)
		}
		// Forwarded signatures are audited like the agent's own.
		ev := rec.next(t)
		want := KindSealed
		if !bytes.Equal(k.Blob, own.pub.Marshal()) {
			want = KindUpstream
		}
		if ev.Backend != want || ev.Err != nil || ev.Key != ssh.FingerprintSHA256(pub) || ev.DataSHA256 != sha256.Sum256(data) {
			t.Errorf("%s: audit event %+v, want a %s signature", pub.Type(), ev, want)
		}
	}
	// The flags reach the upstream.
	rsaPub, _ := ssh.NewPublicKey(&upRSA.PublicKey)
	sig, err := a.SignWithFlags(rsaPub, data, agent.SignatureFlagRsaSha512)
	if err != nil {
		t.Fatal(err)
	}
	if sig.Format != ssh.KeyAlgoRSASHA512 {
		t.Errorf("RSA signature format %s, want %s", sig.Format, ssh.KeyAlgoRSASHA512)
	}

	// Lock locks both; unlock unlocks both.
	if err := a.Lock([]byte("pass")); err != nil {
		t.Fatal(err)
	}
	if keys, _ := a.List(); len(keys) != 0 {
		t.Errorf("locked agent lists %d keys", len(keys))
	}
	if keys, _ := ring.List(); len(keys) != 0 {
		t.Errorf("upstream still unlocked: lists %d keys", len(keys))
	}
	if err := a.Unlock([]byte("pass")); err != nil {
		t.Fatal(err)
	}
	if keys, _ := ring.List(); len(keys) != 2 {
		t.Errorf("upstream lists %d keys after unlock, want 2", len(keys))
	}

	// Remove of an upstream key goes upstream; remove-all empties both.
	edPub, _ := ssh.NewPublicKey(upEd.Public())
	if err := a.Remove(edPub); err != nil {
		t.Fatal(err)
	}
	if keys, _ := ring.List(); len(keys) != 1 {
		t.Errorf("upstream lists %d keys after remove, want 1", len(keys))
	}
	if err := a.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if keys, _ := ring.List(); len(keys) != 0 {
		t.Errorf("upstream lists %d keys after remove-all, want 0", len(keys))
	}
}

// TestUpstreamForeignKeys: keys the server cannot parse are listed and
// signed with byte for byte, and an add of a key type it cannot hold
// goes to the first upstream.
func TestUpstreamForeignKeys(t *testing.T) {
	skBlob := append(sshString([]byte("sk-ssh-ed25519@openssh.com")), sshString(bytes.Repeat([]byte{7}, 32))...)
	skBlob = append(skBlob, sshString([]byte("ssh:"))...)
	sigReply := append([]byte{msgSignResponse}, sshString([]byte("opaque signature bytes"))...)
	u := &rawUpstream{handle: func(body []byte) []byte {
		switch body[0] {
		case msgRequestIdentities:
			out := binary.BigEndian.AppendUint32([]byte{msgIdentitiesAnswer}, 1)
			return append(append(out, sshString(skBlob)...), sshString([]byte("fido"))...)
		case msgSignRequest:
			return sigReply
		case msgAddIdentity, msgAddIDConstrained, msgAddSmartcardKey:
			return []byte{msgSuccess}
		}
		return []byte{msgFailure}
	}}
	up := serveRaw(t, u)
	f := newFakeUnsealer()
	ts := startServer(t, Config{Unsealer: f, Upstreams: []string{up}})

	list := upRoundTrip(t, ts.path, []byte{msgRequestIdentities})
	want := binary.BigEndian.AppendUint32([]byte{msgIdentitiesAnswer}, 1)
	want = append(append(want, sshString(skBlob)...), sshString([]byte("fido"))...)
	if !bytes.Equal(list, want) {
		t.Fatalf("list = %x, want %x", list, want)
	}

	sign := append([]byte{msgSignRequest}, sshString(skBlob)...)
	sign = append(sign, sshString([]byte("data"))...)
	sign = binary.BigEndian.AppendUint32(sign, 4)
	if got := upRoundTrip(t, ts.path, sign); !bytes.Equal(got, sigReply) {
		t.Errorf("sign reply = %x, want %x", got, sigReply)
	}

	add := append([]byte{msgAddIdentity}, sshString([]byte("ssh-dss"))...)
	add = append(add, sshString([]byte("p q g y x"))...)
	if got := upRoundTrip(t, ts.path, add); !bytes.Equal(got, []byte{msgSuccess}) {
		t.Errorf("add of ssh-dss = %x, want success", got)
	}
	// An Ed25519 key the server could hold, but with the confirm
	// constraint and no askpass program to honour it: the upstream takes
	// it.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := ts.dial(t).Add(agent.AddedKey{PrivateKey: priv, ConfirmBeforeUse: true}); err != nil {
		t.Errorf("add with confirm: %v", err)
	}
	ts.mu.RLock()
	n := len(ts.soft)
	ts.mu.RUnlock()
	if n != 0 {
		t.Errorf("the server holds %d software keys, want the confirm key upstream", n)
	}

	// ssh-add -s: PKCS#11 is the upstream's business.
	pkcs11 := append([]byte{msgAddSmartcardKey}, sshString([]byte("/usr/lib/opensc-pkcs11.so"))...)
	pkcs11 = append(pkcs11, sshString([]byte("1234"))...)
	if got := upRoundTrip(t, ts.path, pkcs11); !bytes.Equal(got, []byte{msgSuccess}) {
		t.Errorf("ssh-add -s = %x, want success", got)
	}

	reqs := u.requests()
	var forwarded [][]byte
	for _, r := range reqs {
		if r[0] != msgRequestIdentities {
			forwarded = append(forwarded, r)
		}
	}
	if len(forwarded) != 4 || !bytes.Equal(forwarded[0], sign) || !bytes.Equal(forwarded[1], add) || forwarded[2][0] != msgAddIDConstrained || !bytes.Equal(forwarded[3], pkcs11) {
		t.Errorf("upstream received %x, want the sign and add requests unchanged", forwarded)
	}
}

// logCounter counts the logs at or above Warn whose message contains
// a string.
type logCounter struct {
	mu    sync.Mutex
	msgs  []string
	inner slog.Handler
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		h.msgs = append(h.msgs, r.Message)
		h.mu.Unlock()
	}
	return nil
}
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCounter) WithGroup(string) slog.Handler      { return h }

func (h *logCounter) count(sub string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			n++
		}
	}
	return n
}

// TestUpstreamDown: an upstream that is down is skipped with one
// warning; one that never answers does not delay the server's own keys.
func TestUpstreamDown(t *testing.T) {
	hung := filepath.Join(socketDir(t), "hung.sock")
	l, err := net.Listen("unix", hung)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f := newFakeUnsealer()
	own := newTestKey(t, f, "own", "")
	logs := &logCounter{}
	missing := filepath.Join(socketDir(t), "missing.sock")
	ts := startServer(t, Config{Unsealer: f, Upstreams: []string{missing}, Logger: slog.New(logs)}, Identity{Blob: own.blob})
	a := ts.dial(t)
	for range 3 {
		if got := listBlobs(t, a); len(got) != 1 {
			t.Fatalf("list = %d keys, want the own one", len(got))
		}
	}
	if n := logs.count("upstream agent unavailable"); n != 1 {
		t.Errorf("%d warnings for the missing upstream, want 1", n)
	}

	// Signing with the server's own key never asks the upstream, which
	// here would never answer.
	ts2 := startServer(t, Config{Unsealer: f, Upstreams: []string{hung}}, Identity{Blob: own.blob})
	a2 := ts2.dial(t)
	mustSign(t, a2, own.pub, []byte("data"))
}

func TestDefaultLifetime(t *testing.T) {
	clock := newFakeClock()
	ts := startServer(t, Config{Unsealer: newFakeUnsealer(), DefaultLifetime: time.Minute, Now: clock.Now})
	a := ts.dial(t)
	_, short, _ := ed25519.GenerateKey(rand.Reader)
	_, long, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.Add(agent.AddedKey{PrivateKey: short, Comment: "short"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(agent.AddedKey{PrivateKey: long, Comment: "long", LifetimeSecs: 3600}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Second)
	if n := len(listBlobs(t, a)); n != 2 {
		t.Fatalf("%d keys before the default lifetime; want 2", n)
	}
	clock.Advance(2 * time.Second)
	if got := listBlobs(t, a); len(got) != 1 || got[0] != "long" {
		t.Fatalf("%d keys after the default lifetime; want the key added with its own lifetime", len(got))
	}
}
