package tpmdev

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/sys/unix"
)

const (
	headerSize = 10
	// maxResponse bounds what we read from a TPM: real responses are at most
	// a few KiB (TPM2_MAX_COMMAND_SIZE is usually 4096).
	maxResponse = 64 << 10
)

// ErrTimeout means a TPM command did not answer within its deadline.
var ErrTimeout = errors.New("tpmdev: TPM command timed out")

// ErrMalformedResponse means a TPM response was cut short (or overlong):
// its length disagrees with the size in its header. The command may have
// run on the TPM; its result is lost.
var ErrMalformedResponse = errors.New("tpmdev: malformed TPM response")

// deadline carries the deadline of the command being sent from the guard,
// which computes it, down to the raw transport, which enforces it on its
// socket or device: the wrappers between them (tpmfault, tpmtrace) speak
// transport.TPM, which has no room for one. Commands are sent one at a
// time, and a raw transport reads the deadline when a Send starts.
type deadline struct {
	at atomic.Int64 // Unix nanoseconds; 0: none set
}

func (d *deadline) set(t time.Time) { d.at.Store(t.UnixNano()) }

// get returns the deadline set by the guard, or now+fallback when a raw
// transport is used without one (Open's probe, tests).
func (d *deadline) get(fallback time.Duration) time.Time {
	if d != nil {
		if ns := d.at.Load(); ns != 0 {
			return time.Unix(0, ns)
		}
	}
	return time.Now().Add(fallback)
}

// streamTransport talks to swtpm's server socket. swtpm serves one client at
// a time and has no resource manager, so it dials per command and hangs up
// after the response: tpm2-tools and others can use the same swtpm between
// our commands.
//
// The whole exchange, connecting included, ends at the command's
// deadline: a stopped swtpm still lets the kernel queue connections on its
// socket, and a full queue refuses at once, so neither the connect nor the
// read can be trusted to end by itself.
type streamTransport struct {
	network, addr string
	timeout       time.Duration // used when no deadline is set
	deadline      *deadline
}

func (s *streamTransport) Send(cmd []byte) ([]byte, error) {
	dl := s.deadline.get(s.timeout)
	conn, err := s.dial(dl)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(dl); err != nil {
		return nil, err
	}
	if _, err := conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpmdev: write to swtpm: %w", timeoutErr(err))
	}
	return readResponse(conn)
}

func (s *streamTransport) Close() error { return nil }

// probe checks that the swtpm answers connections, so a wrong path or a
// stopped swtpm is reported at Open rather than at the first command.
func (s *streamTransport) probe(dl time.Time) error {
	conn, err := s.dial(dl)
	if err != nil {
		return err
	}
	return conn.Close()
}

// dial connects to swtpm by dl. swtpm accepts one client at a time with a
// short backlog; a unix socket whose backlog is full refuses at once with
// EAGAIN instead of waiting, so that is retried until dl.
func (s *streamTransport) dial(dl time.Time) (net.Conn, error) {
	delay := time.Millisecond
	for {
		d := net.Dialer{Deadline: dl}
		conn, err := d.Dial(s.network, s.addr)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.EAGAIN) {
			return nil, fmt.Errorf("tpmdev: connect to swtpm at %s: %w (is swtpm running?)", s.addr, timeoutErr(err))
		}
		if time.Now().Add(delay).After(dl) {
			return nil, fmt.Errorf("%w: connect to swtpm at %s: its connection queue stayed full", ErrTimeout, s.addr)
		}
		time.Sleep(delay)
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// readResponse reads one TPM response: the 10-byte header, then the rest of
// the size the header announces.
func readResponse(r io.Reader) ([]byte, error) {
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("tpmdev: read response header: %w", timeoutErr(err))
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponse {
		return nil, fmt.Errorf("tpmdev: malformed response: size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(r, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("tpmdev: read response body: %w", timeoutErr(err))
	}
	return rsp, nil
}

// timeoutErr makes a deadline error (a socket's or a device's) wrap
// ErrTimeout, and leaves other errors alone.
func timeoutErr(err error) error {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	return err
}

// ErrNotDevice means the path given as a TPM device is not a character
// device: a regular file, a FIFO, a directory, a socket or a block device.
// Nothing was written to it.
var ErrNotDevice = errors.New("tpmdev: not a TPM character device")

// deviceTransport talks to a TPM character device: one write of the
// command, one read of the whole response.
//
// Go opens the device non-blocking and registers it with its poller (the
// kernel's TPM driver supports poll), which puts the driver in its
// asynchronous mode: a write queues the command and returns; a read
// returns 0 bytes while the command has not started, blocks while the
// chip runs it, and returns the response after. So a response is read
// with RawConn.Read: read, and on 0 bytes wait for the poller to report
// the response, until the command's deadline. A read that blocks in the
// driver (the chip is running the command) cannot be abandoned: it ends
// when the driver's own chip timeouts do (seconds to minutes). The guard
// then returns ErrTimeout at the deadline anyway, leaves the read to
// finish on its goroutine, and fails later commands fast until it has.
// The driver keeps a response nobody read and refuses the next write with
// EBUSY until it is read, so after a timed-out command the next Send
// first reads (and drops) the late response, within its own deadline.
//
// A device without poll support gets no deadlines: it is switched to
// blocking mode, its commands run synchronously in write and read, and
// only the guard bounds them.
type deviceTransport struct {
	f        *os.File
	path     string
	timeout  time.Duration // used when no deadline is set
	deadline *deadline
	pollable bool
	pending  bool // a command was written and its response not read
}

// openDevice opens path, which must be a character device. What path
// names is checked twice, and refused unless it is a character device
// before a byte is written to it (a regular file given as a TPM would
// otherwise receive the command bytes):
//
//   - before opening it for writing, through an O_PATH descriptor, which
//     opens nothing but a reference to the inode: a read-only file is
//     then reported as what it is, not as a permission problem;
//   - after opening it, non-blocking (a FIFO would block until a writer
//     appears), with fstat on the descriptor that will be used, so that
//     a file swapped in between is caught too.
func openDevice(path string, timeout time.Duration, dl *deadline) (*deviceTransport, error) {
	if err := checkDevice(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, openDeviceErr(path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tpmdev: open %s: %w", path, err)
	}
	if m := fi.Mode(); m&os.ModeCharDevice == 0 {
		f.Close()
		return nil, fmt.Errorf("%w: %s is %s", ErrNotDevice, path, describeMode(m))
	}
	return newDeviceTransport(f, path, timeout, dl), nil
}

// checkDevice returns an error unless path names a character device,
// without opening it.
func checkDevice(path string) error {
	ref, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return openDeviceErr(path, err)
	}
	defer unix.Close(ref)
	var st unix.Stat_t
	if err := unix.Fstat(ref, &st); err != nil {
		return fmt.Errorf("tpmdev: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("%w: %s is %s", ErrNotDevice, path, describeMode(modeType(st.Mode)))
	}
	return nil
}

// modeType converts the S_IFMT bits of a stat mode to an fs.FileMode type.
func modeType(mode uint32) fs.FileMode {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	case unix.S_IFLNK:
		return fs.ModeSymlink
	}
	return 0 // a regular file
}

// openDeviceErr explains an error opening a TPM device.
func openDeviceErr(path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist; use --tpm sim for the insecure development TPM", ErrNoTPM, path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("tpmdev: open %s: permission denied; add your user to the tss group (sudo usermod -aG tss $USER) and log in again", path)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("tpmdev: open %s: busy; use the resource manager /dev/tpmrm0 instead of /dev/tpm0", path)
	}
	return fmt.Errorf("tpmdev: open %s: %w", path, err)
}

// newDeviceTransport wraps f, opened non-blocking. If the poller cannot
// watch f, f is switched to blocking mode: a non-blocking descriptor
// without the poller would fail reads with EAGAIN.
func newDeviceTransport(f *os.File, path string, timeout time.Duration, dl *deadline) *deviceTransport {
	d := &deviceTransport{f: f, path: path, timeout: timeout, deadline: dl, pollable: true}
	if err := f.SetDeadline(time.Time{}); err != nil {
		d.pollable = false
		f.Fd() // puts the descriptor back in blocking mode
	}
	return d
}

// describeMode names a file type for an error message.
func describeMode(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDir != 0:
		return "a directory"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a block device"
	}
	return "a " + m.Type().String() + " file"
}

func (d *deviceTransport) Send(cmd []byte) ([]byte, error) {
	if d.pollable {
		if err := d.f.SetDeadline(d.deadline.get(d.timeout)); err != nil {
			return nil, fmt.Errorf("tpmdev: %s: %w", d.path, err)
		}
	}
	buf := make([]byte, maxResponse)
	if d.pending {
		// The response to a command that timed out: drop it.
		if _, err := d.read(buf); err != nil {
			return nil, fmt.Errorf("tpmdev: %s: an earlier command is still pending: %w", d.path, err)
		}
		d.pending = false
	}
	if _, err := d.f.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpmdev: write to %s: %w", d.path, timeoutErr(err))
	}
	d.pending = true
	n, err := d.read(buf)
	if err != nil {
		return nil, fmt.Errorf("tpmdev: read from %s: %w", d.path, err)
	}
	d.pending = false
	if n < headerSize || int(binary.BigEndian.Uint32(buf[2:6])) != n {
		return nil, fmt.Errorf("tpmdev: malformed response from %s (%d bytes)", d.path, n)
	}
	return buf[:n:n], nil
}

// read reads one response into buf. On a pollable device, 0 bytes (the
// command has not started) or EAGAIN means "not yet": it waits for the
// poller, which reports the response once the driver has it, until the
// deadline. Readiness reported after RawConn.Read starts is never lost.
func (d *deviceTransport) read(buf []byte) (int, error) {
	if !d.pollable {
		n, err := d.f.Read(buf)
		if err == nil && n == 0 {
			err = io.EOF
		}
		return n, err
	}
	rc, err := d.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		return !(rerr == syscall.EAGAIN || (rerr == nil && n == 0))
	})
	if err != nil {
		return 0, timeoutErr(err)
	}
	return n, rerr
}

func (d *deviceTransport) Close() error { return d.f.Close() }

// pendingGrace is how long a command waits for an earlier one that timed
// out to return, before failing: a transport that honours deadlines
// returns right at its deadline, just after the guard has given up on it.
const pendingGrace = 100 * time.Millisecond

// guard enforces a deadline on every command: the earlier of the caller's
// context deadline and the command timeout. The raw transport gets the
// same deadline (see deadline) and usually ends the command itself; the
// guard's timer is for the transports that cannot (a device without poll
// support, the in-process simulator, a fault injector holding a command).
// A command that does not answer in time makes Send return ErrTimeout and
// is abandoned on its goroutine; until it finishes, later commands fail
// fast instead of queueing behind it (two commands in flight on one TPM
// connection would be a protocol error anyway).
type guard struct {
	next     transport.TPM
	timeout  time.Duration
	deadline *deadline                                                      // shared with the raw transport; may be nil
	observe  func(cc tpm2.TPMCC, d time.Duration, rc tpm2.TPMRC, err error) // may be nil

	mu     sync.Mutex
	ctx    context.Context // set by TPM.Run for the duration of a call
	stuck  chan struct{}   // non-nil while a timed-out command is still running
	unsure bool            // a command failed midway: it may have left handles loaded
}

// takeUnsure reports whether a command failed since the last call, and
// clears the mark.
func (g *guard) takeUnsure() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	u := g.unsure
	g.unsure = false
	return u
}

// markUnsure asks for the cleanup at the next Run.
func (g *guard) markUnsure() {
	g.mu.Lock()
	g.unsure = true
	g.mu.Unlock()
}

type sendResult struct {
	rsp []byte
	err error
}

// setContext sets the context of the commands sent from now on and returns
// the one it replaces.
func (g *guard) setContext(ctx context.Context) context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.ctx
	g.ctx = ctx
	return old
}

// Send sends cmd with a deadline, checks the response's framing and
// reports the command to the observer.
func (g *guard) Send(cmd []byte) ([]byte, error) {
	start := time.Now()
	rsp, err := g.send(cmd)
	if err == nil {
		err = checkFraming(rsp)
	}
	if err != nil {
		// The TPM may have run the command (a late or truncated answer)
		// and loaded an object or session nobody will flush.
		rsp = nil
		g.markUnsure()
	}
	if g.observe != nil {
		var rc tpm2.TPMRC
		if err == nil {
			rc = ResponseCode(rsp)
		}
		g.observe(CommandCode(cmd), time.Since(start), rc, err)
	}
	return rsp, err
}

// checkFraming returns an error wrapping ErrMalformedResponse unless rsp
// holds a whole header and exactly the size the header announces.
func checkFraming(rsp []byte) error {
	if len(rsp) < headerSize {
		return fmt.Errorf("%w: %d bytes, shorter than a response header (truncated)", ErrMalformedResponse, len(rsp))
	}
	if size := binary.BigEndian.Uint32(rsp[2:6]); uint64(size) != uint64(len(rsp)) {
		return fmt.Errorf("%w: %d bytes where its header announces %d (truncated or garbled)", ErrMalformedResponse, len(rsp), size)
	}
	return nil
}

// ctxErr is the error of a command whose context ended first.
func ctxErr(ctx context.Context) error {
	return fmt.Errorf("%w: %w", ErrTimeout, context.Cause(ctx))
}

func (g *guard) send(cmd []byte) ([]byte, error) {
	g.mu.Lock()
	ctx := g.ctx
	stuck := g.stuck
	g.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	if ctx.Err() != nil {
		return nil, ctxErr(ctx)
	}
	budget := g.timeout
	dl := time.Now().Add(budget)
	ctxBound := false // the context's deadline comes first
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl, ctxBound = d, true
	}
	// expired makes err, which wraps ErrTimeout, also wrap the context's
	// error when the context's deadline is the one the command had: the
	// transport may notice it a moment before the context does, or give
	// up just before it (connect retries).
	expired := func(err error) error {
		if ctxBound {
			return fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
		}
		return err
	}
	if stuck != nil {
		grace := time.NewTimer(min(pendingGrace, time.Until(dl)))
		select {
		case <-stuck:
			grace.Stop()
			g.mu.Lock()
			if g.stuck == stuck {
				g.stuck = nil
			}
			g.mu.Unlock()
		case <-grace.C:
			err := fmt.Errorf("%w: an earlier command is still pending", ErrTimeout)
			if !time.Now().Before(dl) {
				err = expired(err) // the grace took all the time there was
			}
			return nil, err
		case <-ctx.Done():
			grace.Stop()
			return nil, ctxErr(ctx)
		}
	}
	if g.deadline != nil {
		g.deadline.set(dl)
	}

	done := make(chan sendResult, 1)
	finished := make(chan struct{})
	go func() {
		rsp, err := g.next.Send(cmd)
		done <- sendResult{rsp, err}
		close(finished)
	}()
	timer := time.NewTimer(time.Until(dl))
	defer timer.Stop()
	select {
	case r := <-done:
		if errors.Is(r.err, ErrTimeout) {
			r.err = expired(r.err)
		}
		return r.rsp, r.err
	case <-timer.C:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.stuck = finished
	g.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		return nil, ctxErr(ctx)
	case ctxBound:
		return nil, fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded)
	}
	return nil, fmt.Errorf("%w after %v", ErrTimeout, budget)
}

// waitIdle waits until no abandoned command is running, at most d, and
// reports whether none is.
func (g *guard) waitIdle(d time.Duration) bool {
	g.mu.Lock()
	stuck := g.stuck
	g.mu.Unlock()
	if stuck == nil {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stuck:
		return true
	case <-t.C:
		return false
	}
}

// retrier resends a command the TPM answered with a transient warning
// (TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING). The TPM did not execute
// such a command, so resending the same bytes is safe, sessions included.
type retrier struct {
	next     transport.TPM
	attempts int
	backoff  time.Duration
	sleep    func(time.Duration)
}

func (r *retrier) Send(cmd []byte) ([]byte, error) {
	delay := r.backoff
	for i := 1; ; i++ {
		rsp, err := r.next.Send(cmd)
		if err != nil {
			return nil, err
		}
		rc := ResponseCode(rsp)
		if !isTransient(rc) || i >= r.attempts {
			return rsp, nil
		}
		r.sleep(delay)
		delay *= 2
	}
}

func isTransient(rc tpm2.TPMRC) bool {
	return rc == tpm2.TPMRCRetry || rc == tpm2.TPMRCYielded || rc == tpm2.TPMRCTesting
}

// ResponseCode returns the response code in a raw TPM response, or
// TPM_RC_FAILURE when the response is too short to hold one.
func ResponseCode(rsp []byte) tpm2.TPMRC {
	if len(rsp) < headerSize {
		return tpm2.TPMRCFailure
	}
	return tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10]))
}

// CommandCode returns the command code in a raw TPM command, or 0 when the
// command is too short to hold one.
func CommandCode(cmd []byte) tpm2.TPMCC {
	if len(cmd) < headerSize {
		return 0
	}
	return tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
}
