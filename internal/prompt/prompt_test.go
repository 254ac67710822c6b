package prompt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/safefile"
)

func TestAskpass(t *testing.T) {
	dir := t.TempDir()
	write := func(name, script string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		prog    string
		timeout time.Duration
		want    string
		wantErr string
	}{
		{"first line", write("two", `printf '1234\nsecond\n'`), 0, "1234", ""},
		{"crlf", write("crlf", `printf '1234\r\n'`), 0, "1234", ""},
		{"no newline", write("nonl", `printf 5678`), 0, "5678", ""},
		{"prompt is the argument", write("echo", `printf '%s\n' "$1"`), 0, "the prompt", ""},
		{"empty", write("empty", `exit 0`), 0, "", "no PIN entered"},
		{"cancel", write("cancel", `exit 1`), 0, "", "PIN entry cancelled (" + filepath.Join(dir, "cancel") + " exited with status 1)"},
		{"too much", write("flood", `head -c 10000 /dev/zero`), 0, "", "wrote more than 4096 bytes"},
		{"slow", write("slow", `sleep 5`), 100 * time.Millisecond, "", "no PIN entered in time"},
		{"missing", filepath.Join(dir, "nonexistent"), 0, "", "cannot ask for the PIN: run SSH_ASKPASS program"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			got, err := Askpass(ctx, tt.prog, "the prompt")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("Askpass = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// FileLine reads through safefile: the first line of a regular file;
// a FIFO is refused at once rather than waited on, and an oversized file
// is refused.
func TestFileLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
		wantErr          error
	}{
		{"first line", write("two", "1234\nsecond\n"), "1234", nil},
		{"crlf", write("crlf", "1234\r\n"), "1234", nil},
		{"no newline", write("nonl", "5678"), "5678", nil},
		{"exactly the cap", write("cap", strings.Repeat("9", MaxSecret)), strings.Repeat("9", MaxSecret), nil},
		{"too large", write("big", strings.Repeat("9", MaxSecret+1)), "", safefile.ErrTooLarge},
		{"fifo", fifo, "", safefile.ErrNotRegular},
		{"directory", dir, "", safefile.ErrNotRegular},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FileLine(tt.path)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("readPINFile = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// readAll keeps what fits in its buffer, reports more as over, and
// drains the rest so that the writer is not cut off.
func TestReadAll(t *testing.T) {
	buf := make([]byte, 8)
	n, over, err := readAll(strings.NewReader("12345"), buf)
	if err != nil || over || string(buf[:n]) != "12345" {
		t.Fatalf("short input: %q, %v, %v", buf[:n], over, err)
	}
	r := strings.NewReader(strings.Repeat("x", 2000))
	n, over, err = readAll(r, buf)
	if err != nil || !over || n != len(buf) || r.Len() != 0 {
		t.Fatalf("long input: n=%d over=%v err=%v left=%d", n, over, err, r.Len())
	}
	n, over, err = readAll(strings.NewReader("12345678"), buf)
	if err != nil || over || n != 8 {
		t.Fatalf("input of exactly the buffer's size: n=%d over=%v err=%v", n, over, err)
	}
}

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal (/dev/ptmx): %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// A PIN typed on the terminal is read without echo, and the terminal is
// left as it was.
func TestSecret(t *testing.T) {
	master, slave := openPTY(t)
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	// The user types once the prompt is shown, as a person would: by
	// then echo is off.
	seen := make(chan string, 1)
	go func() {
		var out []byte
		buf := make([]byte, 256)
		for !strings.Contains(string(out), "PIN: ") {
			n, err := master.Read(buf)
			if err != nil {
				seen <- string(out)
				return
			}
			out = append(out, buf[:n]...)
		}
		master.Write([]byte("s3cret-pin\n"))
		n, _ := master.Read(buf) // the newline Secret prints after
		seen <- string(append(out, buf[:n]...))
	}()
	got, err := Secret(slave, "PIN: ")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "s3cret-pin" {
		t.Fatalf("read %q, want %q", got, "s3cret-pin")
	}
	if out := <-seen; strings.Contains(out, "s3cret") {
		t.Fatalf("the PIN was echoed: %q", out)
	}
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *before != *after {
		t.Fatalf("terminal settings not restored: %+v, was %+v", after, before)
	}
}

// readLine stops at the end of the first line, and reports a line
// longer than its buffer.
func TestReadLine(t *testing.T) {
	buf := make([]byte, 8)
	n, over, err := readLine(strings.NewReader("1234\nnext\n"), buf)
	if err != nil || over || string(buf[:n]) != "1234\nnex" && string(buf[:n]) != "1234\n" {
		t.Fatalf("%q, %v, %v", buf[:n], over, err)
	}
	r := strings.NewReader(strings.Repeat("x", 2000) + "\nrest")
	_, over, err = readLine(r, buf)
	if err != nil || !over {
		t.Fatalf("long line: over %v, err %v", over, err)
	}
}

// A new secret is asked twice on the terminal; entries that differ are
// refused.
func TestTerminalTwice(t *testing.T) {
	for _, tt := range []struct {
		name, first, second string
		wantErr             error
	}{
		{"same", "n3w-secret", "n3w-secret", nil},
		{"differ", "n3w-secret", "n3w-secreT", ErrMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			master, slave := openPTY(t)
			ttyPath = slave.Name()
			t.Cleanup(func() { ttyPath = "/dev/tty" })
			go func() {
				buf := make([]byte, 256)
				for _, answer := range []string{tt.first, tt.second} {
					var out []byte
					for !strings.HasSuffix(string(out), ": ") {
						n, err := master.Read(buf)
						if err != nil {
							return
						}
						out = append(out, buf[:n]...)
					}
					master.Write([]byte(answer + "\n"))
				}
			}()
			got, err := TerminalTwice("new: ", "again: ")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("TerminalTwice = %q, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.first {
				t.Fatalf("TerminalTwice = %q, %v; want %q", got, err, tt.first)
			}
		})
	}
}

// Without a terminal, Terminal fails with ErrNoTerminal.
func TestTerminalNone(t *testing.T) {
	ttyPath = filepath.Join(t.TempDir(), "no-tty")
	t.Cleanup(func() { ttyPath = "/dev/tty" })
	if _, err := Terminal("x: "); !errors.Is(err, ErrNoTerminal) {
		t.Fatalf("Terminal without a terminal: %v, want ErrNoTerminal", err)
	}
}
