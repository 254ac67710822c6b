package agentsrv

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"flag"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/sealstore"
)

// fakeUnsealer serves fixed seeds by identity name, counting calls. It can
// be told to fail, or to block until released.
type fakeUnsealer struct {
	mu      sync.Mutex
	seeds   map[string][]byte
	fail    error         // returned by the next calls while set
	block   chan struct{} // if set, calls wait for it to be closed
	entered chan string   // if set, receives the name of each call
	calls   atomic.Int64
}

func newFakeUnsealer() *fakeUnsealer {
	return &fakeUnsealer{seeds: map[string][]byte{}}
}

func (f *fakeUnsealer) Unseal(ctx context.Context, b *sealstore.Blob, dst []byte) error {
	f.calls.Add(1)
	f.mu.Lock()
	seed, fail, block, entered := f.seeds[b.Name], f.fail, f.block, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- b.Name
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail
	}
	if seed == nil {
		return errors.New("fake: no such seed")
	}
	if len(dst) != len(seed) {
		return errors.New("fake: wrong buffer size")
	}
	copy(dst, seed)
	return nil
}

func (f *fakeUnsealer) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

// testKey is a sealed identity for tests: its seed, keys and blob.
type testKey struct {
	seed []byte
	priv ed25519.PrivateKey
	pub  ssh.PublicKey
	blob *sealstore.Blob
}

// newTestKey derives a deterministic identity from name.
func newTestKey(t testing.TB, f *fakeUnsealer, name, comment string) *testKey {
	t.Helper()
	h := sha256.Sum256([]byte("agentsrv test seed " + name))
	priv := ed25519.NewKeyFromSeed(h[:])
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	k := &testKey{
		seed: h[:],
		priv: priv,
		pub:  pub,
		blob: &sealstore.Blob{
			Name:      name,
			Comment:   comment,
			PublicKey: pub,
			Public:    []byte("public area " + name),
			Private:   []byte("private area " + name),
		},
	}
	if f != nil {
		f.mu.Lock()
		f.seeds[name] = k.seed
		f.mu.Unlock()
	}
	return k
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testLogger logs to the test at Debug level, so that the log calls run.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// socketDir returns a short temporary directory (unix socket paths are
// limited to 108 bytes, which t.TempDir can exceed).
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agentsrv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testServer is a Server serving a unix socket for one test.
type testServer struct {
	*Server
	path string
}

// startServer starts a server with cfg (a fake unsealer and a test
// logger unless set) on a fresh socket, serving until the test ends.
func startServer(t testing.TB, cfg Config, ids ...Identity) *testServer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s := New(cfg)
	if ids != nil {
		if err := s.SetIdentities(ids); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(socketDir(t), "agent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.Close()
	})
	return &testServer{Server: s, path: path}
}

// pipeServer returns a server for a test in a synctest bubble, where the
// I/O of a real socket would keep the bubble's clock from moving: connect
// to it with pipeClient. It is closed when the test ends.
func pipeServer(t *testing.T, cfg Config, ids ...Identity) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s := New(cfg)
	t.Cleanup(func() { s.Close() })
	if ids != nil {
		if err := s.SetIdentities(ids); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// pipeClient serves s on one end of a net.Pipe and returns an x/crypto
// agent client on the other. When the test ends the connection is closed
// and its goroutine waited for (before the server is closed).
func (s *Server) pipeClient(t *testing.T) agent.ExtendedAgent {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		s.ServeConn(context.Background(), server)
		close(done)
	}()
	t.Cleanup(func() {
		client.Close()
		<-done
	})
	return agent.NewClient(client)
}

// dial connects an x/crypto agent client to the test server.
func (ts *testServer) dial(t testing.TB) agent.ExtendedAgent {
	t.Helper()
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return agent.NewClient(c)
}

// sealedEntry returns the server's state for identity name.
func (s *Server) sealedEntry(t testing.TB, name string) *sealed {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.byName[name]
	if e == nil {
		t.Fatalf("no identity %q", name)
	}
	return e
}

// cachedKey returns the locked buffer holding identity name's seed, or
// nil.
func (s *Server) cachedKeyBytes(t testing.TB, name string) []byte {
	e := s.sealedEntry(t, name)
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.key.Bytes()
}

// identityStatus returns the status of identity name.
func (s *Server) identityStatus(t testing.TB, name string) IdentityStatus {
	t.Helper()
	for _, is := range s.Status().Identities {
		if is.Name == name {
			return is
		}
	}
	t.Fatalf("no identity %q in status", name)
	return IdentityStatus{}
}

// waitFor polls cond until it holds, failing the test after 10 s. It
// waits for something that must happen, and asserts nothing about speed.
// It is for states that nothing announces (the number of goroutines
// running); wait for an event where there is one.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustSign(t testing.TB, a agent.Agent, key ssh.PublicKey, data []byte) *ssh.Signature {
	t.Helper()
	sig, err := a.Sign(key, data)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := key.Verify(data, sig); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	return sig
}

func listBlobs(t testing.TB, a agent.Agent) []string {
	t.Helper()
	keys, err := a.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var out []string
	for _, k := range keys {
		out = append(out, k.Comment)
	}
	return out
}

// TestMain silences the standard logger, which agent.ServeAgent uses to
// report every failed request, unless the tests run verbosely.
func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Verbose() {
		log.SetOutput(io.Discard)
	}
	os.Exit(m.Run())
}
