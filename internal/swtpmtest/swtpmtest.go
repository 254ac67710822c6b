// Package swtpmtest runs a real software TPM 2.0 (swtpm, from the Debian
// package of the same name) for tests.
//
// Tests that seal and unseal keys need a TPM that behaves like the real
// thing: persistent NV storage that survives power cycles, PCRs that reset
// when the machine does, and the exact error codes a chip returns. swtpm is
// libtpms, the TPM 2.0 reference implementation, behind a socket; this
// package starts one per test and stops it when the test ends:
//
//	func TestSeal(t *testing.T) {
//		tpm := swtpmtest.Start(t)
//		store := openStore(t, tpm.Spec()) // "swtpm:unix:/tmp/.../tpm.sock"
//		...
//		tpm.Restart(t) // power cycle: PCRs reset, sealed objects survive
//		...
//	}
//
// Each [Instance] has two unix sockets. The server socket (Socket) carries
// raw TPM 2.0 commands: a client writes a command and reads back the
// response, whose big-endian length sits at bytes 2..6 of its 10-byte
// header. swtpm serves one client connection at a time; a second client
// waits until the first one disconnects. The control socket (Ctrl) carries
// swtpm's own out-of-band commands (power-on reset, shutdown, locality),
// the channel swtpm_ioctl speaks.
//
// The tpm2-tools command-line tools reach an instance through the swtpm TCTI
// (see [Instance.Env]), which expects the control socket at the server
// socket's path plus ".ctrl"; the sockets here are named accordingly.
//
// Missing tools are a test failure, not a skip: install them with
// apt-get install swtpm swtpm-tools tpm2-tools.
package swtpmtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// startTimeout bounds how long Start waits for swtpm's sockets.
	startTimeout = 10 * time.Second
	// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
	stopGrace = 5 * time.Second
	// ioTimeout bounds one raw command exchange on the server socket.
	ioTimeout = 10 * time.Second
	// maxSunPath is the longest unix socket path Linux accepts
	// (sizeof(sun_path) is 108, including the terminating NUL).
	maxSunPath = 107
	// maxResponse bounds a TPM response; real ones are at most a few KiB.
	maxResponse = 1 << 16
	// outputTail is how much of swtpm's output is kept for error reports.
	outputTail = 16 << 10
)

// Raw TPM 2.0 commands (TPM_ST_NO_SESSIONS, size, command code, parameters).
var (
	// cmdStartupClear is TPM2_Startup(TPM_SU_CLEAR).
	cmdStartupClear = []byte{0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x44, 0x00, 0x00}
)

// Instance is a running swtpm process serving TPM 2.0 on a unix socket.
//
// The exported fields describe where it lives and stay the same across
// [Instance.Restart]. Its methods are safe for concurrent use, but swtpm
// itself serves one client connection at a time.
type Instance struct {
	// Dir is the directory holding the sockets (and, for Start, the
	// state). It is kept short so the socket paths fit in sun_path.
	Dir string
	// Socket is the unix socket carrying raw TPM 2.0 commands.
	Socket string
	// Ctrl is swtpm's control socket (Socket + ".ctrl").
	Ctrl string
	// StateDir holds the TPM's persistent state (tpm2-00.permall).
	StateDir string

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil while stopped
	done chan struct{} // closed when cmd has been waited for
	out  *tailBuffer   // swtpm's combined stdout and stderr
}

// Start starts swtpm with fresh state in a temporary directory, waits until
// its sockets accept connections (at most 10 s) and registers a t.Cleanup
// that stops it. It fails the test with swtpm's output if swtpm does not come
// up, and with "swtpm not installed: apt-get install swtpm swtpm-tools" if
// the binary is missing.
func Start(t testing.TB) *Instance {
	t.Helper()
	return StartWithState(t, "")
}

// StartWithState is [Start] with the TPM state kept in stateDir, so that a
// test can stop one instance and bring up another with the same persistent
// state (created if missing). An empty stateDir means a fresh temporary one.
// Two running instances must not share a state dir.
func StartWithState(t testing.TB, stateDir string) *Instance {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Fatalf("swtpmtest: swtpm not installed: apt-get install swtpm swtpm-tools (%v)", err)
	}
	dir := socketDir(t)
	if stateDir == "" {
		stateDir = filepath.Join(dir, "state")
	}
	if strings.Contains(stateDir, ",") {
		// swtpm splits option values on commas.
		t.Fatalf("swtpmtest: state dir %q contains a comma, which swtpm cannot parse", stateDir)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatalf("swtpmtest: create state dir: %v", err)
	}
	i := &Instance{
		Dir:      dir,
		Socket:   filepath.Join(dir, "tpm.sock"),
		Ctrl:     filepath.Join(dir, "tpm.sock.ctrl"),
		StateDir: stateDir,
	}
	// Registered after the temp dirs' own cleanups, so it runs before them.
	t.Cleanup(i.Stop)
	i.start(t)
	return i
}

// socketDir returns a fresh directory whose socket paths fit in sun_path and
// contain no comma, preferring t.TempDir(). Directories it creates itself are
// removed by t.Cleanup.
func socketDir(t testing.TB) string {
	t.Helper()
	const longest = "/tpm.sock.ctrl"
	ok := func(dir string) bool {
		return len(dir)+len(longest) <= maxSunPath && !strings.Contains(dir, ",")
	}
	if dir := t.TempDir(); ok(dir) {
		return dir
	}
	// t.TempDir embeds the test name and TMPDIR; fall back to a short name,
	// under TMPDIR first and /tmp if TMPDIR itself is too long.
	for _, parent := range []string{os.TempDir(), "/tmp"} {
		if !ok(filepath.Join(parent, "swtpm0123456789")) {
			continue
		}
		dir, err := os.MkdirTemp(parent, "swtpm")
		if err != nil {
			t.Fatalf("swtpmtest: create socket dir: %v", err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		return dir
	}
	t.Fatalf("swtpmtest: no directory short enough for a unix socket path (TMPDIR=%q)", os.TempDir())
	return ""
}

// start launches swtpm and waits for it; the caller has set up the paths.
//
// The sockets are bound and listening before swtpm starts, which gets
// them as file descriptors: a connection is queued from the first moment,
// and readiness is simply the answer to a first command, with no polling
// for the sockets to appear.
func (i *Instance) start(t testing.TB) {
	t.Helper()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cmd != nil {
		t.Fatalf("swtpmtest: swtpm already running on %s", i.Socket)
	}
	// A previous swtpm killed before Stop could remove them.
	for _, p := range []string{i.Socket, i.Ctrl} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("swtpmtest: remove stale socket: %v", err)
		}
	}
	var files []*os.File
	for _, p := range []string{i.Socket, i.Ctrl} {
		f, err := listenFile(p)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			t.Fatalf("swtpmtest: %v", err)
		}
		files = append(files, f)
	}
	out := &tailBuffer{max: outputTail}
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		// ExtraFiles: descriptors 3 and 4.
		"--server", "type=unixio,fd=3",
		"--ctrl", "type=unixio,fd=4",
		"--tpmstate", "dir="+i.StateDir,
		// Come up ready for commands, as a TPM does after firmware
		// has sent TPM2_Startup(CLEAR) on a real boot.
		"--flags", "not-need-init,startup-clear",
	)
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = out, out
	// Do not outlive a test binary that dies without running cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Start()
	// swtpm holds the sockets now: once it exits, they refuse
	// connections, and a connection queued meanwhile is reset.
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		i.removeSockets()
		t.Fatalf("swtpmtest: start swtpm: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	i.cmd, i.done, i.out = cmd, done, out

	// Ready means answering a command: a swtpm that loses the race for
	// its state directory's lock may accept a connection before it
	// exits. The exchange waits for swtpm to accept and answer (at most
	// ioTimeout); if it fails, swtpm's exit tells why.
	err = i.answers()
	if err == nil {
		return
	}
	select {
	case <-done:
		i.cmd = nil
		i.removeSockets()
		// Its output says why; err is only how the exchange ended.
		t.Fatalf("swtpmtest: swtpm exited during startup (%v); output:\n%s", cmd.ProcessState, out)
	case <-time.After(startTimeout):
		i.stopLocked()
		t.Fatalf("swtpmtest: swtpm not ready after %v: %v; output:\n%s", startTimeout, err, out)
	}
}

// listenFile binds a unix socket at path, listens on it and returns its
// descriptor as a file for a child process. The socket file stays until
// removeSockets.
func listenFile(path string) (*os.File, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return f, nil
}

// removeSockets removes the socket files, as swtpm does on a clean exit
// from the sockets it creates itself.
func (i *Instance) removeSockets() {
	for _, p := range []string{i.Socket, i.Ctrl} {
		_ = os.Remove(p)
	}
}

// getRandomCmd is TPM2_GetRandom of 8 bytes, a command any ready TPM answers.
var getRandomCmd = []byte{0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 0x08}

// answers checks that the TPM answers a command successfully.
func (i *Instance) answers() error {
	rsp, err := i.transmit(getRandomCmd)
	if err != nil {
		return err
	}
	if rc := responseCode(rsp); rc != 0 {
		return fmt.Errorf("swtpmtest: TPM2_GetRandom: response code %#x", rc)
	}
	return nil
}

// Spec returns the icn-agent TPM device spec for this instance:
// "swtpm:unix:" followed by the server socket path.
func (i *Instance) Spec() string {
	return "swtpm:unix:" + i.Socket
}

// Env returns the environment entries that point tpm2-tools at this
// instance (TPM2TOOLS_TCTI=swtpm:path=Socket). Append them to os.Environ()
// for an exec.Cmd.
func (i *Instance) Env() []string {
	return []string{"TPM2TOOLS_TCTI=swtpm:path=" + i.Socket}
}

// Restart stops swtpm and starts it again on the same state dir and socket
// paths: a simulated power cycle. Persistent state (NV indices, persistent
// handles, hierarchy seeds) survives; PCRs and all volatile state (sessions,
// transient objects) are reset, and TPM2_Startup(CLEAR) has been sent when
// Restart returns. Clients connected before the restart see their
// connection closed.
func (i *Instance) Restart(t testing.TB) {
	t.Helper()
	i.Stop()
	i.start(t)
}

// Reset performs a TPM reset without stopping the process, like a platform
// reset line: it sends CMD_INIT on the control channel (swtpm_ioctl -i),
// which reinitialises the TPM from its persistent state, then sends
// TPM2_Startup(CLEAR) on the server socket. PCRs and volatile state are
// reset; persistent state is kept.
//
// Startup goes over the server socket, so it waits for any connected client
// to disconnect first (swtpm serves one client at a time); Reset fails the
// test if that takes more than 10 s.
func (i *Instance) Reset(t testing.TB) {
	t.Helper()
	cmd := exec.Command("swtpm_ioctl", "--unix", i.Ctrl, "-i")
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			t.Fatalf("swtpmtest: swtpm_ioctl not installed: apt-get install swtpm-tools")
		}
		t.Fatalf("swtpmtest: swtpm_ioctl -i: %v: %s", err, bytes.TrimSpace(out))
	}
	resp, err := i.transmit(cmdStartupClear)
	if err != nil {
		t.Fatalf("swtpmtest: TPM2_Startup(CLEAR) after reset: %v", err)
	}
	if rc := responseCode(resp); rc != 0 {
		t.Fatalf("swtpmtest: TPM2_Startup(CLEAR) after reset: response code %#x", rc)
	}
}

// Stop stops swtpm: SIGTERM, then SIGKILL if it has not exited within 5 s.
// Stop is idempotent; Start registers it as a test cleanup.
func (i *Instance) Stop() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.stopLocked()
}

func (i *Instance) stopLocked() {
	if i.cmd == nil {
		return
	}
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	// A paused swtpm acts on SIGTERM only once it runs again.
	_ = i.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-i.done:
	case <-time.After(stopGrace):
		_ = i.cmd.Process.Kill()
		<-i.done
	}
	i.cmd = nil
	i.removeSockets()
}

// Pause stops the swtpm process with SIGSTOP: a wedged TPM. The kernel
// still queues connections on its socket (until the queue is full) and
// takes the commands written to them, but nothing answers until
// [Instance.Resume]. Stop ends a paused instance too.
func (i *Instance) Pause(t testing.TB) {
	t.Helper()
	i.signal(t, syscall.SIGSTOP)
}

// Resume lets a paused swtpm run again (SIGCONT): it then answers the
// commands queued meanwhile, in order, and new ones after them.
func (i *Instance) Resume(t testing.TB) {
	t.Helper()
	i.signal(t, syscall.SIGCONT)
}

func (i *Instance) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cmd == nil {
		t.Fatalf("swtpmtest: %v: swtpm is not running", sig)
	}
	if err := i.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("swtpmtest: %v: %v", sig, err)
	}
}

// transmit sends one raw TPM command on the server socket and returns the
// whole response, header included.
func (i *Instance) transmit(cmd []byte) ([]byte, error) {
	c, err := net.DialTimeout("unix", i.Socket, ioTimeout)
	if err != nil {
		return nil, fmt.Errorf("swtpmtest: connect %s: %w", i.Socket, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return nil, fmt.Errorf("swtpmtest: set deadline: %w", err)
	}
	if _, err := c.Write(cmd); err != nil {
		return nil, fmt.Errorf("swtpmtest: write command: %w", err)
	}
	resp := make([]byte, 10)
	if _, err := io.ReadFull(c, resp); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w (is another client connected? swtpm serves one at a time)", err)
		}
		return nil, fmt.Errorf("swtpmtest: read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(resp[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("swtpmtest: response size %d out of range", size)
	}
	resp = append(resp, make([]byte, size-10)...)
	if _, err := io.ReadFull(c, resp[10:]); err != nil {
		return nil, fmt.Errorf("swtpmtest: read response body: %w", err)
	}
	return resp, nil
}

// responseCode returns the TPM_RC of a response (bytes 6..10).
func responseCode(resp []byte) uint32 {
	return binary.BigEndian.Uint32(resp[6:10])
}

// tailBuffer keeps the last max bytes written to it; swtpm logs a line per
// client disconnect, so a long test would otherwise grow it without bound.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
