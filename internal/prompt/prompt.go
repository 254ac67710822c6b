// Package prompt reads secrets (PINs and passphrases) from a terminal, a
// file or an SSH_ASKPASS program, and leaves no copy of them behind.
//
// Every function here reads into one fixed buffer of locked memory
// (internal/secmem) that it wipes before returning, and returns a slice of
// exactly the secret's size that the caller wipes. That is the point of
// the package: the usual ways of reading a line (term.ReadPassword,
// io.ReadAll, exec.Cmd.Output, bufio) grow their buffers by reallocation
// and leave every outgrown array, with a prefix of the secret in it, to
// the garbage collector, which never clears it.
//
// A secret is the first line of what is read, without its line ending; at
// most MaxSecret bytes are read. Files go through internal/safefile: a
// FIFO or a device is refused at once, never waited on.
package prompt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/secmem"
)

// MaxSecret bounds what is read for one secret: a file, an askpass
// program's output, a line typed on the terminal.
const MaxSecret = 4096

// AskpassTimeout bounds how long Askpass waits when its context has no
// deadline.
const AskpassTimeout = 2 * time.Minute

// ErrNoTerminal means there is no terminal to ask on.
var ErrNoTerminal = errors.New("no terminal")

// ErrMismatch means a new secret typed twice differed.
var ErrMismatch = errors.New("the two entries differ")

// ErrTooLong means the input was longer than MaxSecret bytes.
var ErrTooLong = fmt.Errorf("longer than %d bytes", MaxSecret)

// Askpass asks for a PIN by running prog (an SSH_ASKPASS program) with
// prompt as its only argument, as ssh-add does, and returns the first
// line of its standard output. A non-zero exit means the user cancelled.
// Without a deadline in ctx it waits at most AskpassTimeout; at the
// deadline the program's whole process group is killed, so that a child
// it started cannot keep the output open.
func Askpass(ctx context.Context, prog, prompt string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, AskpassTimeout)
		defer cancel()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cannot ask for the PIN: %w", err)
	}
	defer r.Close()
	cmd := exec.CommandContext(ctx, prog, prompt)
	cmd.Stdout = w
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	startErr := cmd.Start()
	w.Close() // the program holds the write end now; EOF comes when it exits
	if startErr != nil {
		return nil, fmt.Errorf("cannot ask for the PIN: run SSH_ASKPASS program %s: %w", prog, startErr)
	}
	// Whatever happens to the program, stop reading at the deadline.
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })
	defer stop()

	buf, err := secmem.New(MaxSecret)
	if err != nil {
		cmd.Cancel()
		cmd.Wait()
		return nil, fmt.Errorf("cannot ask for the PIN: %w", err)
	}
	defer buf.Destroy()
	n, over, readErr := readAll(r, buf.Bytes())
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("no PIN entered in time (%s): %w", prog, ctx.Err())
	case waitErr != nil:
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			return nil, fmt.Errorf("PIN entry cancelled (%s exited with status %d)", prog, ee.ExitCode())
		}
		return nil, fmt.Errorf("cannot ask for the PIN: run SSH_ASKPASS program %s: %w", prog, waitErr)
	case readErr != nil:
		return nil, fmt.Errorf("cannot ask for the PIN: read from %s: %w", prog, readErr)
	case over:
		return nil, fmt.Errorf("the SSH_ASKPASS program %s wrote more than %d bytes; that is not a PIN", prog, MaxSecret)
	}
	pin := firstLine(buf.Bytes()[:n])
	if len(pin) == 0 {
		return nil, errors.New("no PIN entered")
	}
	return pin, nil
}

// FileLine returns the first line of the regular file at path. A FIFO or
// device is refused (safefile.ErrNotRegular), and so is a file of more
// than MaxSecret bytes (safefile.ErrTooLarge).
func FileLine(path string) ([]byte, error) {
	f, err := safefile.Open(path, safefile.Options{})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf, err := secmem.New(MaxSecret)
	if err != nil {
		return nil, err
	}
	defer buf.Destroy()
	n, over, err := readAll(f, buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if over {
		return nil, fmt.Errorf("%s: %w: more than %d bytes", path, safefile.ErrTooLarge, MaxSecret)
	}
	return firstLine(buf.Bytes()[:n]), nil
}

// ReadFile reads the whole regular file at path, at most max bytes, into
// a new locked buffer, and returns the buffer (for the caller to Destroy)
// and the bytes read, a slice of it. It is for secrets that are files,
// such as private keys.
func ReadFile(path string, max int) (*secmem.Buffer, []byte, error) {
	buf, err := secmem.New(max)
	if err != nil {
		return nil, nil, err
	}
	n, err := safefile.ReadInto(path, buf.Bytes(), safefile.Options{})
	if err != nil {
		buf.Destroy()
		return nil, nil, err
	}
	return buf, buf.Bytes()[:n], nil
}

// Terminal prints prompt on the controlling terminal and reads a line
// without echo. It fails with ErrNoTerminal if the process has none.
func Terminal(prompt string) ([]byte, error) {
	tty, err := openTTY()
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	return Secret(tty, prompt)
}

// TerminalTwice asks for a new secret on the controlling terminal, with
// prompt and then again, and fails with ErrMismatch if the two differ.
func TerminalTwice(prompt, again string) ([]byte, error) {
	tty, err := openTTY()
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	first, err := Secret(tty, prompt)
	if err != nil {
		return nil, err
	}
	second, err := Secret(tty, again)
	if err != nil {
		secmem.Wipe(first)
		return nil, err
	}
	same := bytes.Equal(first, second)
	secmem.Wipe(second)
	if !same {
		secmem.Wipe(first)
		return nil, ErrMismatch
	}
	return first, nil
}

// ttyPath is the controlling terminal (a test's pseudo-terminal in tests).
var ttyPath = "/dev/tty"

func openTTY() (*os.File, error) {
	tty, err := os.OpenFile(ttyPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoTerminal, err)
	}
	return tty, nil
}

// Secret prints prompt on tty and reads a line without echo, as
// term.ReadPassword does (line editing and signals kept), but into a
// fixed locked buffer. The terminal's settings are restored.
func Secret(tty *os.File, prompt string) ([]byte, error) {
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read from the terminal: %w", err)
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	noEcho.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return nil, fmt.Errorf("read from the terminal: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(tty, prompt)
	defer fmt.Fprintln(tty)

	buf, err := secmem.New(MaxSecret)
	if err != nil {
		return nil, fmt.Errorf("read from the terminal: %w", err)
	}
	defer buf.Destroy()
	n, over, err := readLine(tty, buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("read from the terminal: %w", err)
	}
	if over {
		return nil, ErrTooLong
	}
	return firstLine(buf.Bytes()[:n]), nil
}

// readAll reads r to its end into buf, never anywhere else, and returns
// how much it holds. If r has more than fits, the rest is read and
// discarded through a small buffer that is wiped (so that a writer is not
// killed by a broken pipe before it exits) and over is true.
func readAll(r io.Reader, buf []byte) (n int, over bool, err error) {
	return readInto(r, buf, false)
}

// readLine is readAll that stops at the end of the first line.
func readLine(r io.Reader, buf []byte) (n int, over bool, err error) {
	return readInto(r, buf, true)
}

func readInto(r io.Reader, buf []byte, line bool) (n int, over bool, err error) {
	ends := func(b []byte, err error) bool {
		return errors.Is(err, io.EOF) || line && bytes.IndexByte(b, '\n') >= 0
	}
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if ends(buf[n-m:n], err) {
			return n, false, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	var sink [512]byte
	defer secmem.Wipe(sink[:])
	for {
		m, err := r.Read(sink[:])
		over = over || m > 0 || line
		if ends(sink[:m], err) {
			return n, over, nil
		}
		if err != nil {
			return n, over, err
		}
	}
}

// firstLine returns a copy of the first line of data, without its line
// ending. The copy is exactly its size, so appending nothing to it ever
// leaves an outgrown array behind; the caller wipes it.
func firstLine(data []byte) []byte {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	return bytes.Clone(bytes.TrimSuffix(line, []byte("\r")))
}
