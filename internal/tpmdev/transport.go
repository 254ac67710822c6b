package tpmdev

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
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

// streamTransport talks to swtpm's server socket. swtpm serves one client at
// a time and has no resource manager, so it dials per command and hangs up
// after the response: tpm2-tools and others can use the same swtpm between
// our commands.
type streamTransport struct {
	network, addr string
	timeout       time.Duration
}

func (s *streamTransport) Send(cmd []byte) ([]byte, error) {
	conn, err := s.dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
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
func (s *streamTransport) probe() error {
	conn, err := s.dial()
	if err != nil {
		return err
	}
	return conn.Close()
}

// dial connects to swtpm. swtpm accepts one client at a time with a short
// backlog; a unix socket whose backlog is full refuses at once with EAGAIN
// instead of waiting, so that is retried until the timeout.
func (s *streamTransport) dial() (net.Conn, error) {
	deadline := time.Now().Add(s.timeout)
	delay := time.Millisecond
	for {
		conn, err := net.DialTimeout(s.network, s.addr, time.Until(deadline))
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.EAGAIN) || time.Now().Add(delay).After(deadline) {
			return nil, fmt.Errorf("tpmdev: connect to swtpm at %s: %w (is swtpm running?)", s.addr, err)
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

func timeoutErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	return err
}

// deviceTransport talks to a TPM character device: one write of the
// command, one read of the whole response.
type deviceTransport struct {
	f *os.File
}

func openDevice(path string) (*deviceTransport, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("%w: %s does not exist; use --tpm sim for the insecure development TPM", ErrNoTPM, path)
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("tpmdev: open %s: permission denied; add your user to the tss group (sudo usermod -aG tss $USER) and log in again", path)
		case errors.Is(err, syscall.EBUSY):
			return nil, fmt.Errorf("tpmdev: open %s: busy; use the resource manager /dev/tpmrm0 instead of /dev/tpm0", path)
		}
		return nil, fmt.Errorf("tpmdev: open %s: %w", path, err)
	}
	return &deviceTransport{f: f}, nil
}

func (d *deviceTransport) Send(cmd []byte) ([]byte, error) {
	if _, err := d.f.Write(cmd); err != nil {
		return nil, fmt.Errorf("tpmdev: write to %s: %w", d.f.Name(), err)
	}
	buf := make([]byte, maxResponse)
	n, err := d.f.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("tpmdev: read from %s: %w", d.f.Name(), err)
	}
	if n < headerSize || int(binary.BigEndian.Uint32(buf[2:6])) != n {
		return nil, fmt.Errorf("tpmdev: malformed response from %s (%d bytes)", d.f.Name(), n)
	}
	return buf[:n:n], nil
}

func (d *deviceTransport) Close() error { return d.f.Close() }

// guard enforces a deadline on every command. A command that does not answer
// in time makes Send return ErrTimeout; until the stuck command finishes,
// later commands fail fast instead of queueing behind it (two commands in
// flight on one TPM connection would be a protocol error anyway).
type guard struct {
	next    transport.TPM
	timeout time.Duration
	observe func(cc tpm2.TPMCC, d time.Duration, rc tpm2.TPMRC, err error) // may be nil

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

type sendResult struct {
	rsp []byte
	err error
}

func (g *guard) setContext(ctx context.Context) {
	g.mu.Lock()
	g.ctx = ctx
	g.mu.Unlock()
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
		g.mu.Lock()
		g.unsure = true
		g.mu.Unlock()
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

func (g *guard) send(cmd []byte) ([]byte, error) {
	g.mu.Lock()
	ctx := g.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if g.stuck != nil {
		select {
		case <-g.stuck:
			g.stuck = nil
		default:
			g.mu.Unlock()
			return nil, fmt.Errorf("%w: an earlier command is still pending", ErrTimeout)
		}
	}
	g.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tpmdev: %w", err)
	}

	done := make(chan sendResult, 1)
	finished := make(chan struct{})
	go func() {
		rsp, err := g.next.Send(cmd)
		done <- sendResult{rsp, err}
		close(finished)
	}()
	timer := time.NewTimer(g.timeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.rsp, r.err
	case <-timer.C:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.stuck = finished
	g.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	return nil, fmt.Errorf("%w after %v", ErrTimeout, g.timeout)
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
