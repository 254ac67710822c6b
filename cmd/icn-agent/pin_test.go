package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

var _ agentsrv.Unsealer = (*pinUnsealer)(nil)

// fakeAskpass is an SSH_ASKPASS program that records its prompts and
// answers with the content of a file, or exits 1 if that file is missing.
type fakeAskpass struct {
	t    *testing.T
	dir  string
	prog string
}

func newFakeAskpass(t *testing.T) *fakeAskpass {
	dir := t.TempDir()
	prog := filepath.Join(dir, "askpass")
	script := "#!/bin/sh\nprintf '%s\\n' \"$1\" >> " + filepath.Join(dir, "prompts") + "\n" +
		"[ -f " + filepath.Join(dir, "answer") + " ] || exit 1\ncat " + filepath.Join(dir, "answer") + "\n"
	if err := os.WriteFile(prog, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return &fakeAskpass{t: t, dir: dir, prog: prog}
}

// answer sets what the program prints; "" makes it exit 1 (cancel).
func (a *fakeAskpass) answer(s string) {
	path := filepath.Join(a.dir, "answer")
	if s == "" {
		os.Remove(path)
		return
	}
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		a.t.Fatal(err)
	}
}

// prompts returns and forgets the prompts shown so far.
func (a *fakeAskpass) prompts() []string {
	path := filepath.Join(a.dir, "prompts")
	data, _ := os.ReadFile(path)
	os.Remove(path)
	if len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func openTestTPM(t *testing.T, kind string) *tpmdev.TPM {
	t.Helper()
	spec := tpmdev.Spec{Kind: tpmdev.KindSim}
	if kind == "swtpm" {
		var err error
		if spec, err = tpmdev.ParseSpec(swtpmtest.Start(t).Spec()); err != nil {
			t.Fatal(err)
		}
	}
	tpm, err := tpmdev.Open(context.Background(), spec, tpmdev.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

// The agent's unsealer asks for a PIN through SSH_ASKPASS only for PIN
// identities, only when the policy can be satisfied, once per unseal (a
// wrong PIN is reported, not retried), and finds signed policies in the
// store.
func TestPINUnsealer(t *testing.T) {
	for _, kind := range []string{"sim", "swtpm"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			tpm := openTestTPM(t, kind)
			store, err := sealstore.Open(filepath.Join(t.TempDir(), "store"))
			if err != nil {
				t.Fatal(err)
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			pin := []byte("open sesame")
			seal := func(name string, opts sealstore.SealOptions) *sealstore.Blob {
				opts.Name = name
				b, err := sealstore.Generate(ctx, tpm, opts)
				if err != nil {
					t.Fatal(err)
				}
				if err := store.Create(b); err != nil {
					t.Fatal(err)
				}
				return b
			}
			plain := seal("plain", sealstore.SealOptions{})
			pinned := seal("pinned", sealstore.SealOptions{PIN: pin})
			moved := seal("moved", sealstore.SealOptions{PIN: pin, PCRs: []int{7, 16}})
			signed := seal("signed", sealstore.SealOptions{PIN: pin, Signer: &key.PublicKey})
			err = tpm.Run(ctx, func(tp transport.TPM) error { return tpmdev.ExtendPCR(tp, 16, []byte("moved")) })
			if err != nil {
				t.Fatal(err)
			}
			signPolicy := func() {
				var values [][]byte
				err := tpm.Run(ctx, func(tp transport.TPM) error {
					var err error
					values, _, err = tpmdev.ReadPCRs(tp, tpm2.TPMAlgSHA256, []int{0, 7})
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				p, err := sealstore.SignPolicy(key, []sealstore.PCRValue{{Index: 0, Value: values[0]}, {Index: 7, Value: values[1]}}, "", time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := store.AddSignedPolicy(p); err != nil {
					t.Fatal(err)
				}
			}

			ask := newFakeAskpass(t)
			withAskpass := newPINUnsealer(tpm, store, ask.prog, nil)
			without := newPINUnsealer(tpm, store, "", nil)
			steps := []struct {
				name    string
				u       *pinUnsealer
				b       *sealstore.Blob
				answer  string
				before  func()
				wantErr string // "" to unseal
				prompts int
				counter uint32 // the DA counter after the step
			}{
				{"no PIN", without, plain, "", nil, "", 0, 0},
				{"right PIN", withAskpass, pinned, string(pin), nil, "", 1, 0},
				{"wrong PIN", withAskpass, pinned, "open sesamf", nil, "wrong PIN (TPM_RC_AUTH_FAIL", 1, 1},
				{"cancelled", withAskpass, pinned, "", nil, "PIN entry cancelled", 1, 1},
				{"no askpass", without, pinned, "", nil, "pinned is protected by a PIN and the agent has no program to ask for it: start icn-agent serve with SSH_ASKPASS set", 0, 1},
				{"PCR moved: not asked", withAskpass, moved, string(pin), nil, "PCR 16 changed since it was sealed", 0, 1},
				{"not signed: not asked", withAskpass, signed, string(pin), nil, "no policy signed by key", 0, 1},
				{"signed", withAskpass, signed, string(pin), signPolicy, "", 1, 1},
				{"signed, wrong PIN", withAskpass, signed, "1234", nil, "counted 2 failed PIN attempt(s) and locks every PIN-protected identity out at 3", 1, 2},
			}
			for _, s := range steps {
				if s.before != nil {
					s.before()
				}
				ask.answer(s.answer)
				dst := make([]byte, sealstore.SeedSize)
				err := s.u.Unseal(ctx, s.b, dst)
				switch {
				case s.wantErr == "" && err != nil:
					t.Errorf("%s: %v", s.name, err)
				case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
					t.Errorf("%s: error %v, want it to contain %q", s.name, err, s.wantErr)
				case s.wantErr == "":
					if pub, err := sealstore.PublicKey(dst); err != nil || string(pub.Marshal()) != string(s.b.PublicKey.Marshal()) {
						t.Errorf("%s: unsealed another key (%v)", s.name, err)
					}
				}
				prompts := ask.prompts()
				if len(prompts) != s.prompts {
					t.Errorf("%s: askpass ran %d times (%q), want %d", s.name, len(prompts), prompts, s.prompts)
				}
				for _, p := range prompts {
					if want := "Enter PIN for icn-agent identity " + s.b.Name + " (" + ssh.FingerprintSHA256(s.b.PublicKey) + "): "; p != want {
						t.Errorf("%s: prompt %q, want %q", s.name, p, want)
					}
				}
				if st, err := readDA(ctx, tpm); err != nil || st.Counter != s.counter {
					t.Errorf("%s: DA counter %d (%v), want %d", s.name, st.Counter, err, s.counter)
				}
			}
			if err := tpm.Run(ctx, tpmdev.ResetLockout); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunAskpass(t *testing.T) {
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
			got, err := runAskpass(ctx, tt.prog, "the prompt")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("runAskpass = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestReadPCRValuesFile(t *testing.T) {
	dir := t.TempDir()
	v0 := strings.Repeat("00", 32)
	v7 := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		content string
		want    string // FormatPCRValues, or "" for an error
		wantErr string
	}{
		{"N=HEX", "7=" + v7 + "\n0=" + v0 + "\n", "0=" + v0 + " 7=" + v7, ""},
		{"comments and blanks", "# firmware 2\n\n0=" + v0 + "\n  7 = " + v7 + "  \n", "0=" + v0 + " 7=" + v7, ""},
		{"tpm2_pcrread", "sha256:\n  0 : 0x" + strings.ToUpper(v0) + "\n  7 : 0x" + strings.ToUpper(v7) + "\n", "0=" + v0 + " 7=" + v7, ""},
		{"empty", "\n# nothing\n", "", "has no PCR values"},
		{"twice", "7=" + v7 + "\n7=" + v7 + "\n", "", ":2: PCR 7 given twice"},
		{"pcr 24", "24=" + v7, "", ":1: want N=HEX with N a PCR 0-23"},
		{"short", "7=abcd", "", ":1: PCR 7: want 64 hex digits"},
		{"garbage", "hello", "", `:1: want N=HEX`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readPCRValuesFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || sealstore.FormatPCRValues(got, " ") != tt.want {
				t.Fatalf("readPCRValuesFile = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// explainUnseal must keep the sentinels it adds advice to.
func TestExplainUnsealKeepsSentinels(t *testing.T) {
	b := &sealstore.Blob{Name: "x", Policy: sealstore.Policy{PCRs: []sealstore.PCRValue{{Index: 0}, {Index: 7}}}}
	for _, sentinel := range []error{sealstore.ErrWrongPIN, sealstore.ErrLockout, sealstore.ErrNoSignedPolicy, sealstore.ErrPCRMismatch} {
		var in error
		switch sentinel {
		case sealstore.ErrNoSignedPolicy:
			in = &sealstore.MissingPolicyError{Name: "x", KeyID: "k"}
		case sealstore.ErrPCRMismatch:
			in = &sealstore.PCRMismatchError{Name: "x", PCRs: []int{7}}
		default:
			in = sentinel
		}
		if err := explainUnseal(context.Background(), failingTPM{}, nil, b, in); !errors.Is(err, sentinel) {
			t.Errorf("explainUnseal(%v) = %v: lost the sentinel", in, err)
		}
	}
}

// failingTPM is a sealstore.TPM whose every use fails.
type failingTPM struct{}

func (failingTPM) RunWithSRK(context.Context, func(transport.TPM, *tpmdev.SRK) error) error {
	return errors.New("no TPM")
}

// --pin-file is read through safefile: the first line of a regular file;
// a FIFO is refused at once rather than waited on, and an oversized file
// is refused.
func TestReadPINFile(t *testing.T) {
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
		{"exactly the cap", write("cap", strings.Repeat("9", maxPINFile)), strings.Repeat("9", maxPINFile), nil},
		{"too large", write("big", strings.Repeat("9", maxPINFile+1)), "", safefile.ErrTooLarge},
		{"fifo", fifo, "", safefile.ErrNotRegular},
		{"directory", dir, "", safefile.ErrNotRegular},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readPINFile(tt.path)
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

// readSecret keeps what fits in its buffer, reports more as over, and
// drains the rest so that the writer is not cut off.
func TestReadSecret(t *testing.T) {
	buf := make([]byte, 8)
	n, over, err := readSecret(strings.NewReader("12345"), buf)
	if err != nil || over || string(buf[:n]) != "12345" {
		t.Fatalf("short input: %q, %v, %v", buf[:n], over, err)
	}
	r := strings.NewReader(strings.Repeat("x", 2000))
	n, over, err = readSecret(r, buf)
	if err != nil || !over || n != len(buf) || r.Len() != 0 {
		t.Fatalf("long input: n=%d over=%v err=%v left=%d", n, over, err, r.Len())
	}
	n, over, err = readSecret(strings.NewReader("12345678"), buf)
	if err != nil || over || n != 8 {
		t.Fatalf("input of exactly the buffer's size: n=%d over=%v err=%v", n, over, err)
	}
}

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
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
func TestPromptSecret(t *testing.T) {
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
		n, _ := master.Read(buf) // the newline promptSecret prints after
		seen <- string(append(out, buf[:n]...))
	}()
	got, err := promptSecret(slave, "PIN: ")
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

// readLineInto stops at the end of the first line, and reports a line
// longer than its buffer.
func TestReadLineInto(t *testing.T) {
	buf := make([]byte, 8)
	n, over, err := readLineInto(strings.NewReader("1234\nnext\n"), buf)
	if err != nil || over || string(buf[:n]) != "1234\nnex" && string(buf[:n]) != "1234\n" {
		t.Fatalf("%q, %v, %v", buf[:n], over, err)
	}
	r := strings.NewReader(strings.Repeat("x", 2000) + "\nrest")
	_, over, err = readLineInto(r, buf)
	if err != nil || !over {
		t.Fatalf("long line: over %v, err %v", over, err)
	}
}
