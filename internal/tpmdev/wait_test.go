package tpmdev

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/swtpmtest"
)

// answering is a TPM that answers every command at once with success.
type answering struct{}

func (answering) Send([]byte) ([]byte, error) { return response(tpm2.TPMRCSuccess), nil }
func (answering) Close() error                { return nil }

// newFakeTPM returns a TPM over next, as Open would build it, without a
// device.
func newFakeTPM(next transport.TPMCloser, timeout time.Duration) *TPM {
	t := &TPM{spec: Spec{Kind: KindSim}, timeout: timeout, sem: make(chan struct{}, 1), raw: next}
	t.guard = &guard{next: next, timeout: timeout}
	t.tpm = &retrier{next: t.guard, attempts: 1, backoff: time.Millisecond, sleep: time.Sleep}
	return t
}

// hold runs a Run that keeps the TPM until release is closed, and returns
// once it holds it.
func hold(t *testing.T, tpm *TPM, release chan struct{}) {
	t.Helper()
	held := make(chan struct{})
	go tpm.Run(context.Background(), func(transport.TPM) error {
		close(held)
		<-release
		return nil
	})
	<-held
}

// Waiting behind another user of the TPM ends with the waiter's context:
// its deadline, its cancellation, and without either the command timeout.
func TestRunWaitHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tpm := newFakeTPM(answering{}, 10*time.Second)
		release := make(chan struct{})
		hold(t, tpm, release)

		ran := false
		body := func(transport.TPM) error { ran = true; return nil }

		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := tpm.Run(ctx, body)
		cancel()
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "busy") {
			t.Errorf("Run behind a busy TPM, 300 ms deadline: %v; want ErrTimeout and DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 300*time.Millisecond {
			t.Errorf("gave up after %v; want 300ms", d)
		}

		ctx, cancel = context.WithCancel(context.Background())
		go func() { time.Sleep(time.Second); cancel() }()
		if err := tpm.Run(ctx, body); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.Canceled) {
			t.Errorf("Run behind a busy TPM, cancelled: %v; want ErrTimeout and Canceled", err)
		}

		start = time.Now()
		if err := tpm.Run(context.Background(), body); !errors.Is(err, ErrTimeout) {
			t.Errorf("Run behind a busy TPM, no deadline: %v; want ErrTimeout", err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("gave up after %v; want the command timeout, 10s", d)
		}
		if ran {
			t.Error("fn ran while another Run held the TPM")
		}

		// Once the holder is done, the TPM is free again.
		close(release)
		if err := tpm.Run(context.Background(), body); err != nil || !ran {
			t.Errorf("Run after the holder finished: %v (ran %v)", err, ran)
		}
	})
}

// A command takes the earlier of the context's deadline and the command
// timeout.
func TestCommandDeadlineIsTheEarlier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hanging{release: make(chan struct{})}
		defer close(h.release)
		g := &guard{next: h, timeout: 5 * time.Second, deadline: new(deadline)}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		g.setContext(ctx)
		start := time.Now()
		_, err := g.Send(make([]byte, 10))
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Send: %v; want ErrTimeout wrapping DeadlineExceeded", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Send gave up after %v; want the context's 1s", d)
		}
		if got := g.deadline.get(0); !got.Equal(start.Add(time.Second)) {
			t.Errorf("transport deadline %v; want %v", got, start.Add(time.Second))
		}
	})
}

// A TPM device path must name a character device: a regular file, a FIFO,
// a directory or a socket is refused before anything is written to it.
func TestOpenRefusesWhatIsNotADevice(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	const content = "the user's own file\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, what string }{
		{file, "a regular file"},
		{fifo, "a FIFO"},
		{dir, "a directory"},
		{sock, "a socket"},
	} {
		t.Run(tt.what, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := Open(context.Background(), Spec{Kind: KindDevice, Path: tt.path}, Options{StateDir: t.TempDir()})
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("Open(%s) still blocked after 10 s", tt.path)
			}
			if !errors.Is(err, ErrNotDevice) || !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.what) {
				t.Fatalf("Open(%s) = %v; want ErrNotDevice naming the path and %q", tt.what, err, tt.what)
			}
		})
	}
	if got, err := os.ReadFile(file); err != nil || string(got) != content {
		t.Fatalf("the regular file now holds %q (%v); want it untouched", got, err)
	}
}

// seqpacketDevice returns a device transport over one end of a
// SOCK_SEQPACKET socket pair (a pollable descriptor that keeps message
// boundaries, as a TPM device does: one write, one read) and the other
// end, where the test plays the TPM.
func seqpacketDevice(t *testing.T, dl *deadline) (*deviceTransport, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := newDeviceTransport(os.NewFile(uintptr(fds[0]), "fake-tpm"), "fake-tpm", time.Minute, dl)
	peer := os.NewFile(uintptr(fds[1]), "fake-tpm-peer")
	t.Cleanup(func() { d.Close(); peer.Close() })
	if !d.pollable {
		t.Fatal("a socket is not pollable")
	}
	return d, peer
}

// A device that does not answer ends the command at its deadline; its late
// response is dropped before the next command, which gets its own.
func TestDeviceDeadlineAndLateResponse(t *testing.T) {
	dl := new(deadline)
	d, peer := seqpacketDevice(t, dl)
	cmd := make([]byte, 10)

	dl.set(time.Now().Add(50 * time.Millisecond))
	if _, err := d.Send(cmd); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Send to a silent device: %v; want ErrTimeout", err)
	}
	buf := make([]byte, 64)
	if n, err := peer.Read(buf); err != nil || n != len(cmd) {
		t.Fatalf("device got %d bytes (%v); want the command", n, err)
	}
	// The TPM answers late, then answers the next command.
	late := response(tpm2.TPMRCLockout)
	if _, err := peer.Write(late); err != nil {
		t.Fatal(err)
	}
	go func() {
		if _, err := peer.Read(buf); err == nil {
			peer.Write(response(tpm2.TPMRCSuccess))
		}
	}()
	dl.set(time.Now().Add(10 * time.Second))
	rsp, err := d.Send(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if rc := ResponseCode(rsp); rc != tpm2.TPMRCSuccess {
		t.Fatalf("second command got response code %v; want success (the late response must be dropped)", rc)
	}
}

// A wedged swtpm (SIGSTOP): a command fails within its deadline, connect
// included; a Run queued behind it fails within its own; once swtpm runs
// again the TPM works without being reopened.
func TestWedgedSwtpm(t *testing.T) {
	sw := swtpmtest.Start(t)
	spec, err := ParseSpec(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 500 * time.Millisecond
	tpm, err := Open(context.Background(), spec, Options{CommandTimeout: timeout, FlushStale: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	getRandom := func(ctx context.Context) error {
		return tpm.Run(ctx, func(tp transport.TPM) error {
			_, err := tpm2.GetRandom{BytesRequested: 8}.Execute(tp)
			return err
		})
	}
	if err := getRandom(context.Background()); err != nil {
		t.Fatal(err)
	}

	sw.Pause(t)
	// More users than swtpm's connection queue holds, all at once.
	const users = 8
	errs := make(chan error, users)
	durs := make(chan time.Duration, users)
	for range users {
		go func() {
			start := time.Now()
			errs <- getRandom(context.Background())
			durs <- time.Since(start)
		}()
	}
	var worst time.Duration
	for range users {
		if err := <-errs; !errors.Is(err, ErrTimeout) {
			t.Errorf("command on a wedged swtpm: %v; want ErrTimeout", err)
		}
		worst = max(worst, <-durs)
	}
	t.Logf("slowest of %d commands on a wedged swtpm failed after %v", users, worst)
	// Each waits at most the timeout for the TPM, and its command at most
	// the timeout.
	if worst > 2*timeout+time.Second {
		t.Errorf("a command on a wedged swtpm took %v; want at most %v", worst, 2*timeout+time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	err = getRandom(ctx)
	cancel()
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("command with a 100 ms deadline: %v; want ErrTimeout and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond+time.Second {
		t.Errorf("command with a 100 ms deadline took %v", d)
	}

	sw.Resume(t)
	// swtpm first answers what was queued while it was stopped; the
	// first commands after it may still time out.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := getRandom(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TPM still failing 30 s after swtpm resumed: %v", err)
		}
	}
}

// A read-only file given as a TPM device is reported as a regular file,
// not as a permission problem.
func TestOpenReadOnlyFileIsNotADevice(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may write to a read-only file")
	}
	path := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(path, []byte("x"), 0o400); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), Spec{Kind: KindDevice, Path: path}, Options{StateDir: t.TempDir()})
	if !errors.Is(err, ErrNotDevice) || !strings.Contains(err.Error(), "a regular file") {
		t.Fatalf("Open(read-only file) = %v; want ErrNotDevice, a regular file", err)
	}
}
