package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/internal/audit"
	"github.com/icn/icn-agent/internal/config"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// logRecorder is a slog.Handler that passes each message to a channel,
// so that a test waits for what the agent logs instead of polling.
type logRecorder struct{ ch chan string }

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r logRecorder) WithGroup(string) slog.Handler            { return r }
func (r logRecorder) Handle(_ context.Context, rec slog.Record) error {
	msg := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		msg += " " + a.String()
		return true
	})
	select {
	case r.ch <- msg:
	default: // a test that stopped listening does not block the agent
	}
	return nil
}

// newTestLogger returns a logger that sends every message to logs.
func newTestLogger(logs chan string) *slog.Logger { return slog.New(logRecorder{logs}) }

// waitLog waits until the agent logs a message containing want.
func waitLog(t *testing.T, logs <-chan string, want string) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case msg := <-logs:
			if strings.Contains(msg, want) {
				return msg
			}
		case <-timeout:
			t.Fatalf("the agent did not log %q", want)
		}
	}
}

// home is an agent's directories: a store holding sealed identities and a
// state directory with the simulator's seed and the audit log.
type home struct {
	dir, store, state string
}

// newHome seals an identity per name with the simulator and returns their
// public keys.
func newHome(t *testing.T, names ...string) (*home, []ssh.PublicKey) {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep them short.
	dir, err := os.MkdirTemp("", "icnd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &home{dir: dir, store: filepath.Join(dir, "identities"), state: filepath.Join(dir, "state")}
	if err := os.MkdirAll(h.store, 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := sealstore.Open(h.store)
	if err != nil {
		t.Fatal(err)
	}
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{StateDir: h.state})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	var pubs []ssh.PublicKey
	for _, name := range names {
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		b, err := tpmseal.Seal(context.Background(), tpm, seed, tpmseal.SealOptions{Name: name, PCRs: []int{0, 7}})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Create(b); err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, b.PublicKey)
	}
	return h, pubs
}

// options are an agent's options for h, logging to logs.
func (h *home) options(logs chan string) Options {
	return Options{
		Config:   config.Default(),
		TPM:      "sim",
		Store:    h.store,
		StateDir: h.state,
		Socket:   filepath.Join(h.dir, "agent.sock"),
		Getenv:   func(k string) string { return map[string]string{"HOME": "/nonexistent"}[k] },
		Logger:   newTestLogger(logs),
	}
}

// running is an agent started by start.
type running struct {
	*Agent
	sock   string
	cancel context.CancelFunc
	done   chan error
}

// start runs an agent with opts and waits until it is ready.
func start(t *testing.T, opts Options) *running {
	t.Helper()
	ready := make(chan string, 1)
	opts.Ready = func(s string) { ready <- s }
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Agent: New(opts), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	select {
	case r.sock = <-ready:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the agent did not start")
	}
	return r
}

// stop cancels the agent's context and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of its context's end")
		return nil
	}
}

func (r *running) status(t *testing.T) *client.Status {
	t.Helper()
	c, err := client.Dial(r.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRun serves a sealed identity from the first connection on, signs,
// applies Reload and DropAll on its loop, and on cancel returns nil with
// its socket removed and the audit log closed with a checkpoint.
func TestRun(t *testing.T) {
	h, pubs := newHome(t, "work")
	logs := make(chan string, 256)
	opts := h.options(logs)
	cfgFile := filepath.Join(h.dir, "config.toml")
	if err := os.WriteFile(cfgFile, []byte("[identity.tpm]\nauto_lock_timeout_secs = 4321\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.ConfigFile = cfgFile
	r := start(t, opts)
	if r.sock != opts.Socket {
		t.Errorf("ready with socket %q; want %q", r.sock, opts.Socket)
	}
	st := r.status(t)
	if len(st.Identities) != 1 || st.Identities[0].Name != "work" {
		t.Fatalf("serving %+v; want the identity work", st.Identities)
	}

	c, err := client.Dial(r.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sig, err := c.Agent().Sign(pubs[0], []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pubs[0].Verify([]byte("data"), sig); err != nil {
		t.Fatal(err)
	}
	if st := r.status(t); !st.Identities[0].Unsealed {
		t.Fatal("after a signature the seed is not cached")
	}

	r.DropAll()
	waitLog(t, logs, "dropped every cached seed")
	if st := r.status(t); st.Identities[0].Unsealed {
		t.Error("DropAll left the seed cached")
	}

	r.Reload()
	waitLog(t, logs, "config reloaded; rescanning the store")
	if _, err := c.Agent().Sign(pubs[0], []byte("data")); err != nil {
		t.Fatal(err)
	}
	left := time.Until(r.status(t).Identities[0].Expiry)
	if want := 4321 * time.Second; left < want-time.Minute || left > want {
		t.Errorf("after Reload a seed expires in %v; want about %v, the new config's", left, want)
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if _, err := os.Lstat(r.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := audit.Verify(h.state, nil); err != nil {
		t.Errorf("audit log: %v", err)
	}
}

// TestRunWithoutTPM: with TPMOptional an agent that finds no TPM serves
// keys added with ssh-add; without, Run fails.
func TestRunWithoutTPM(t *testing.T) {
	h, _ := newHome(t)
	logs := make(chan string, 256)
	opts := h.options(logs)
	opts.TPM = filepath.Join(h.dir, "no-tpm")
	if err := New(opts).Run(context.Background()); err == nil {
		t.Fatal("Run without a TPM succeeded")
	}

	opts.TPMOptional = true
	r := start(t, opts)
	waitLog(t, logs, "sealed identities are unavailable")
	c, err := client.Dial(r.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := c.Agent().Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Agent().List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("list: %v, %v; want the added key", keys, err)
	}
	r.Reload() // ignored without a TPM
	r.DropAll()
	waitLog(t, logs, "dropped every cached seed")
	if err := r.stop(t); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

// TestRunListenErrors: the errors the command adds advice to.
func TestRunListenErrors(t *testing.T) {
	h, _ := newHome(t)
	logs := make(chan string, 256)
	opts := h.options(logs)
	opts.TPM, opts.TPMOptional = filepath.Join(h.dir, "no-tpm"), true
	start(t, opts)

	// A second agent on the same socket.
	err := New(opts).Run(context.Background())
	var le *ListenError
	if !errors.As(err, &le) || !errors.Is(err, agentsrv.ErrAgentRunning) || le.Path != opts.Socket {
		t.Errorf("second agent on %s: %v; want a ListenError for ErrAgentRunning", opts.Socket, err)
	}

	// No socket given and no XDG_RUNTIME_DIR.
	opts.Socket = ""
	if err := New(opts).Run(context.Background()); !errors.Is(err, ErrNoRuntimeDir) {
		t.Errorf("no socket and no XDG_RUNTIME_DIR: %v; want ErrNoRuntimeDir", err)
	}
	opts.Getenv = func(k string) string { return map[string]string{"XDG_RUNTIME_DIR": h.dir}[k] }
	if got, _ := DefaultSocket(opts.Getenv); got != filepath.Join(h.dir, "icn-agent", "agent.sock") {
		t.Errorf("DefaultSocket = %q", got)
	}
}

// TestRunAuditError: an audit log that cannot be opened stops the agent
// with ErrAuditLog, unless the config turns the log off.
func TestRunAuditError(t *testing.T) {
	h, _ := newHome(t, "work")
	logs := make(chan string, 256)
	opts := h.options(logs)
	// A link where the log's current file would be: never followed.
	if err := os.Symlink(filepath.Join(h.dir, "elsewhere"), filepath.Join(h.state, audit.CurrentFile)); err != nil {
		t.Fatal(err)
	}
	err := New(opts).Run(context.Background())
	if !errors.Is(err, ErrAuditLog) {
		t.Fatalf("Run with an unusable audit directory: %v; want ErrAuditLog", err)
	}
	opts.Config.Audit = false
	start(t, opts)
}

func TestKnownHostsFiles(t *testing.T) {
	if f := KnownHostsFiles(func(string) string { return "" }); f != nil {
		t.Errorf("without HOME: %q", f)
	}
	f := KnownHostsFiles(func(string) string { return "/home/u" })
	if strings.Join(f, " ") != "/home/u/.ssh/known_hosts /home/u/.ssh/known_hosts2" {
		t.Errorf("KnownHostsFiles = %q", f)
	}
}
