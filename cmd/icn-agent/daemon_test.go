package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/internal/swtpmtest"
)

// Helpers to run the real icn-agent binary as a daemon, for the tests
// that look at the process from outside (its memory, its metrics
// endpoint). The binary is built with go build (see agentBinary).

// daemonEnv is a home for one agent: XDG directories, a TPM selection
// and an environment to run icn-agent in.
type daemonEnv struct {
	dir string
	env []string
	bin string
}

// agentBinary builds icn-agent once per test process, as go build does
// for users: unlike the test binary (which go test links without a
// symbol table), it lets memscan name the globals a secret is found in.
var agentBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "icn-agent-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "icn-agent")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/icn/icn-agent/cmd/icn-agent").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func newDaemonEnv(t *testing.T, tpmSpec string) *daemonEnv {
	t.Helper()
	bin, err := agentBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are limited to 108 bytes: keep the runtime
	// directory short.
	dir, err := os.MkdirTemp("", "icnd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &daemonEnv{dir: dir, bin: bin}
	d.env = append(os.Environ(),
		"HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"ICN_AGENT_TPM="+tpmSpec,
		"SSH_AUTH_SOCK=",
	)
	return d
}

// run runs icn-agent with args and returns its stdout; it fails the test
// if the command fails.
func (d *daemonEnv) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Env = d.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("icn-agent %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// writeConfig writes the config file with the given auto-lock timeout.
func (d *daemonEnv) writeConfig(t *testing.T, autoLockSecs int) {
	t.Helper()
	dir := filepath.Join(d.dir, "config", "icn-agent")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("[identity.tpm]\nauto_lock_timeout_secs = %d\n", autoLockSecs)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// importKey makes an Ed25519 key, writes it as an unencrypted OpenSSH
// private key file and seals it with icn-agent import, so that the test
// knows the seed the agent will hold. The file is removed afterwards.
func (d *daemonEnv) importKey(t *testing.T, name string) (seed []byte, pub ssh.PublicKey) {
	t.Helper()
	return d.importKeyArgs(t, name)
}

// importKeyArgs is importKey with more arguments for icn-agent import
// (--pin --pin-file F, say).
func (d *daemonEnv) importKeyArgs(t *testing.T, name string, args ...string) (seed []byte, pub ssh.PublicKey) {
	t.Helper()
	seed = make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	block, err := ssh.MarshalPrivateKey(priv, name+"@memtest")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(d.dir, name+".key")
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(file)
	d.run(t, append([]string{"import", name, file}, args...)...)
	if pub, err = ssh.NewPublicKey(priv.Public()); err != nil {
		t.Fatal(err)
	}
	return seed, pub
}

// agentProc is a running icn-agent serve.
type agentProc struct {
	cmd    *exec.Cmd
	sock   string
	stderr *syncBuffer
	done   chan error
}

// syncBuffer is a bytes.Buffer safe for one writer and readers, which
// tells waiters of every write (see waitFor).
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced at each write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return s.b.Write(p)
}

// waitFor waits until cond holds of the buffer's text, testing it once
// now and once after each write: an event, not a poll.
func (s *syncBuffer) waitFor(timeout time.Duration, cond func(string) bool) bool {
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		text := s.b.String()
		if s.written == nil {
			s.written = make(chan struct{})
		}
		written := s.written
		s.mu.Unlock()
		if cond(text) {
			return true
		}
		select {
		case <-written:
		case <-deadline:
			return false
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve starts icn-agent serve with args and waits until it prints its
// SSH_AUTH_SOCK line and lists want identities. The agent is stopped
// when the test ends.
func (d *daemonEnv) serve(t *testing.T, want int, args ...string) *agentProc {
	t.Helper()
	sock := filepath.Join(d.dir, "agent.sock")
	cmd := exec.Command(d.bin, append([]string{"serve", "-a", sock}, args...)...)
	cmd.Env = d.env
	p := &agentProc{cmd: cmd, sock: sock, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("agent log:\n%s", p.stderr.String())
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "SSH_AUTH_SOCK="+sock+";") {
			t.Fatalf("agent printed %q; log:\n%s", line, p.stderr.String())
		}
	case err := <-p.done:
		t.Fatalf("agent exited: %v; log:\n%s", err, p.stderr.String())
	case <-time.After(time.Minute):
		t.Fatalf("agent did not start; log:\n%s", p.stderr.String())
	}
	// The agent lists the store before it listens: it serves every
	// identity from the first connection on.
	if st := p.status(t); len(st.Identities) != want {
		t.Fatalf("the agent lists %d identities; want %d; log:\n%s", len(st.Identities), want, p.stderr.String())
	}
	return p
}

func (p *agentProc) pid() int { return p.cmd.Process.Pid }

// client connects to the agent; the connection is closed when the test
// ends.
func (p *agentProc) client(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.Dial(p.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// status asks the agent for its status on a fresh connection.
func (p *agentProc) status(t *testing.T) *client.Status {
	t.Helper()
	c, err := client.Dial(p.sock)
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

// signal sends sig to the agent.
func (p *agentProc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// stop terminates the agent (SIGTERM, then SIGKILL after 10 s) and waits
// for it.
func (p *agentProc) stop(t *testing.T) error {
	select {
	case err := <-p.done: // exited already
		p.done <- err
		return err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		t.Errorf("agent did not exit within 10 s of SIGTERM")
		return err
	}
}

// waitUntil polls cond until it holds, failing the test after 30 s. It
// waits for something that must happen and asserts nothing about speed.
// It is for states of the agent process that no event announces (a
// background read of the TPM, a TPM that answers again); what the agent
// logs is waited for with waitLog.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeConfigText writes the config file.
func (d *daemonEnv) writeConfigText(t *testing.T, text string) string {
	t.Helper()
	dir := filepath.Join(d.dir, "config", "icn-agent")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.toml")
	os.Remove(path)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// timed runs fn and returns how long it took.
func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// With the TPM wedged (swtpm stopped by SIGSTOP, the PCR poller and the
// dictionary-attack reader hitting it), what needs no TPM answers at once:
// a signature with a cached seed, list, status, lock and unlock, also
// while a request that needs the TPM waits. A signature that must unseal
// fails within tpm_timeout_secs plus a second. Once the TPM answers again
// the agent works without a restart.
func TestDaemonWedgedTPM(t *testing.T) {
	sw := swtpmtest.Start(t)
	d := newDaemonEnv(t, sw.Spec())
	const tpmTimeout = 2 * time.Second
	d.writeConfigText(t, "[identity.tpm]\ntpm_timeout_secs = 2\npcr_poll_secs = 1\n")
	_, warmPub := d.importKey(t, "warm")
	_, coldPub := d.importKey(t, "cold")
	p := d.serve(t, 2)
	ag := p.client(t).Agent()
	data := []byte("wedged")
	if _, err := ag.Sign(warmPub, data); err != nil {
		t.Fatalf("first signature: %v", err)
	}
	// The dictionary-attack counter has been read in the background.
	waitUntil(t, "status to carry the lockout counter", func() bool { return p.status(t).Lockout != nil })

	sw.Pause(t)
	// Waits for what does not need the TPM, the bound they must meet
	// (generous: the machine is shared), and what was measured.
	const fast = 500 * time.Millisecond
	quick := func(what string, fn func() error) {
		t.Helper()
		var err error
		took := timed(func() { err = fn() })
		t.Logf("wedged TPM: %s took %v", what, took)
		if err != nil {
			t.Errorf("wedged TPM: %s: %v", what, err)
		}
		if took > fast {
			t.Errorf("wedged TPM: %s took %v; want under %v", what, took, fast)
		}
	}
	checkQuick := func(when string) {
		t.Helper()
		quick(when+"warm sign", func() error { _, err := ag.Sign(warmPub, data); return err })
		quick(when+"list", func() error { _, err := ag.List(); return err })
		quick(when+"status", func() error {
			c, err := client.Dial(p.sock)
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.Status()
			if err == nil && st.Lockout == nil {
				err = fmt.Errorf("status lost the lockout counter")
			}
			return err
		})
	}
	checkQuick("")

	// A signature that needs the TPM, on its own connection; meanwhile
	// the rest still answers.
	coldErr := make(chan error, 1)
	coldTook := make(chan time.Duration, 1)
	go func() {
		c, err := client.Dial(p.sock)
		if err != nil {
			coldErr <- err
			return
		}
		defer c.Close()
		var serr error
		took := timed(func() { _, serr = c.Agent().Sign(coldPub, data) })
		coldTook <- took
		coldErr <- serr
	}()
	checkQuick("during a cold sign: ")
	if err := <-coldErr; err == nil {
		t.Errorf("cold sign on a wedged TPM succeeded")
	}
	took := <-coldTook
	t.Logf("wedged TPM: cold sign failed after %v (tpm_timeout_secs = 2)", took)
	if took > tpmTimeout+time.Second {
		t.Errorf("cold sign on a wedged TPM took %v; want at most %v", took, tpmTimeout+time.Second)
	}

	// Lock and unlock need no TPM either; their cost is the passphrase
	// hash (Argon2id), a few hundred milliseconds of CPU.
	for _, op := range []struct {
		what string
		fn   func() error
	}{
		{"lock", func() error { return ag.Lock([]byte("pw")) }},
		{"unlock", func() error { return ag.Unlock([]byte("pw")) }},
	} {
		var err error
		took := timed(func() { err = op.fn() })
		t.Logf("wedged TPM: %s took %v", op.what, took)
		if err != nil || took > 2*time.Second {
			t.Errorf("wedged TPM: %s: %v after %v; want success within 2 s", op.what, err, took)
		}
	}

	sw.Resume(t)
	waitUntil(t, "a cold sign to work once the TPM is back", func() bool {
		_, err := ag.Sign(coldPub, data)
		return err == nil
	})
}

// waitLog waits until the agent's log contains each of want.
func (p *agentProc) waitLog(t *testing.T, want ...string) {
	t.Helper()
	ok := p.stderr.waitFor(30*time.Second, func(log string) bool {
		for _, w := range want {
			if !strings.Contains(log, w) {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("timed out waiting for the agent to log %q", want)
	}
}

// checkSignals shows that the main loop still handles signals: SIGUSR1
// drops the seed an earlier signature cached, SIGTERM ends the agent.
func (p *agentProc) checkSignals(t *testing.T, pub ssh.PublicKey) {
	t.Helper()
	if _, err := p.client(t).Agent().Sign(pub, []byte("data")); err != nil {
		t.Fatalf("sign: %v", err)
	}
	if st := p.status(t); len(st.Identities) != 1 || !st.Identities[0].Unsealed {
		t.Fatalf("after a signature the seed is not cached: %+v", st.Identities)
	}
	p.signal(t, syscall.SIGUSR1)
	p.waitLog(t, "dropped every cached seed")
	if st := p.status(t); len(st.Identities) != 1 || st.Identities[0].Unsealed {
		t.Fatalf("after SIGUSR1 the seed is still cached: %+v", st.Identities)
	}
	p.signal(t, syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("agent exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("agent still running 10 s after SIGTERM")
	}
}

// A FIFO named NAME-cert.pub in the store is logged and skipped, at start
// and when SIGHUP rescans: the agent serves (its socket appears), and its
// main loop still answers SIGUSR1 and SIGTERM.
func TestDaemonFIFOCertificate(t *testing.T) {
	for _, when := range []string{"startup", "SIGHUP"} {
		t.Run(when, func(t *testing.T) {
			sw := swtpmtest.Start(t)
			d := newDaemonEnv(t, sw.Spec())
			_, pub := d.importKey(t, "work")
			fifo := filepath.Join(d.dir, "data", "icn-agent", "identities", "work-cert.pub")
			mkfifo := func() {
				if err := syscall.Mkfifo(fifo, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if when == "startup" {
				mkfifo()
			}
			p := d.serve(t, 1)
			if when == "SIGHUP" {
				mkfifo()
				p.signal(t, syscall.SIGHUP)
			}
			p.waitLog(t, "cannot read certificate", "work-cert.pub: not a regular file (a FIFO)")
			p.checkSignals(t, pub)
		})
	}
}

// A config file replaced by a FIFO, or by a link to /dev/zero, is an error
// logged at SIGHUP; the running config stays, and so does the main loop.
func TestDaemonReloadConfigNotARegularFile(t *testing.T) {
	for _, kind := range []string{"FIFO", "/dev/zero"} {
		t.Run(strings.Trim(kind, "/"), func(t *testing.T) {
			sw := swtpmtest.Start(t)
			d := newDaemonEnv(t, sw.Spec())
			const autoLock = 4321 * time.Second
			path := d.writeConfigText(t, "[identity.tpm]\nauto_lock_timeout_secs = 4321\n")
			_, pub := d.importKey(t, "work")
			p := d.serve(t, 1)

			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			want := "not a regular file (a FIFO)"
			if kind == "FIFO" {
				if err := syscall.Mkfifo(path, 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := os.Symlink("/dev/zero", path); err != nil {
					t.Fatal(err)
				}
				want = "not a regular file (a character device)"
			}
			p.signal(t, syscall.SIGHUP)
			p.waitLog(t, "config not reloaded; keeping the running one", want)

			// The old auto-lock timeout still applies to a new unseal.
			if _, err := p.client(t).Agent().Sign(pub, []byte("data")); err != nil {
				t.Fatal(err)
			}
			st := p.status(t)
			if len(st.Identities) != 1 {
				t.Fatalf("status lists %d identities", len(st.Identities))
			}
			if left := time.Until(st.Identities[0].Expiry); left < autoLock-time.Minute || left > autoLock {
				t.Errorf("seed expires in %v; want about %v, the running config's", left, autoLock)
			}
			p.checkSignals(t, pub)
		})
	}
}

// The library's errors get the command's hints: an agent already
// listening on the socket, an audit log that cannot be opened.
func TestDaemonHints(t *testing.T) {
	d := newDaemonEnv(t, "sim")
	p := d.serve(t, 0)
	fail := func(want string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, d.bin, args...)
		cmd.Env = d.env
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "icn-agent serve: hint: "+want) {
			t.Errorf("icn-agent %s: %v; want the hint %q in\n%s", strings.Join(args, " "), err, want, out)
		}
	}
	fail("use the running agent (SSH_AUTH_SOCK="+p.sock+")", "serve", "-a", p.sock)
	p.stop(t)

	// The audit log's file replaced by a link, which it never follows.
	current := filepath.Join(d.dir, "state", "icn-agent", "audit.log")
	if err := os.Remove(current); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(d.dir, "elsewhere"), current); err != nil {
		t.Fatal(err)
	}
	fail("the audit log of signatures is on by default", "serve", "-a", p.sock)
}
