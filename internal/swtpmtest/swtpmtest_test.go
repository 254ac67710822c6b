package swtpmtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// cmdGetRandom8 is TPM2_GetRandom(bytesRequested = 8).
var cmdGetRandom8 = []byte{0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x08}

// getRandom sends TPM2_GetRandom(8) as raw bytes and checks the response:
// rc 0 and a TPM2B_DIGEST of exactly 8 bytes.
func getRandom(t *testing.T, i *Instance) []byte {
	t.Helper()
	resp, err := i.transmit(cmdGetRandom8)
	if err != nil {
		t.Fatal(err)
	}
	if rc := responseCode(resp); rc != 0 {
		t.Fatalf("TPM2_GetRandom: response code %#x", rc)
	}
	if len(resp) != 10+2+8 {
		t.Fatalf("TPM2_GetRandom: response is %d bytes (%x); want 20", len(resp), resp)
	}
	if n := binary.BigEndian.Uint16(resp[10:12]); n != 8 {
		t.Fatalf("TPM2_GetRandom: %d random bytes; want 8", n)
	}
	return resp[12:]
}

// tpm2 runs a tpm2-tools command against the instance and returns stdout.
func tpm2(t *testing.T, i *Instance, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), i.Env()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

const (
	zeroPCR = "0x0000000000000000000000000000000000000000000000000000000000000000"
	nvIndex = "0x1500016"
)

// pcr0 reads sha256 PCR 0 with tpm2_pcrread.
func pcr0(t *testing.T, i *Instance) string {
	t.Helper()
	out := tpm2(t, i, "tpm2_pcrread", "sha256:0")
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "0 : "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no PCR 0 in tpm2_pcrread output:\n%s", out)
	return ""
}

func extendPCR0(t *testing.T, i *Instance) {
	t.Helper()
	tpm2(t, i, "tpm2_pcrextend", "0:sha256="+strings.Repeat("ab", 32))
	if got := pcr0(t, i); got == zeroPCR {
		t.Fatal("PCR 0 still zero after tpm2_pcrextend")
	}
}

// defineNV creates an 8-byte NV index holding data, as persistent state.
func defineNV(t *testing.T, i *Instance, data string) {
	t.Helper()
	tpm2(t, i, "tpm2_nvdefine", nvIndex, "-C", "o", "-s", fmt.Sprint(len(data)), "-a", "ownerread|ownerwrite|authread|authwrite")
	f := filepath.Join(t.TempDir(), "nvdata")
	if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	tpm2(t, i, "tpm2_nvwrite", nvIndex, "-C", "o", "-i", f)
}

func readNV(t *testing.T, i *Instance) string {
	t.Helper()
	return tpm2(t, i, "tpm2_nvread", nvIndex, "-C", "o")
}

func TestLifecycle(t *testing.T) {
	i := Start(t)
	if !strings.HasPrefix(i.Socket, i.Dir) || i.Ctrl != i.Socket+".ctrl" {
		t.Fatalf("unexpected paths: Dir %q Socket %q Ctrl %q", i.Dir, i.Socket, i.Ctrl)
	}
	a, b := getRandom(t, i), getRandom(t, i)
	if bytes.Equal(a, b) {
		t.Errorf("two GetRandom calls returned the same bytes %x", a)
	}
	if got := pcr0(t, i); got != zeroPCR {
		t.Fatalf("PCR 0 after start = %s; want zero", got)
	}
	defineNV(t, i, "persist!")

	steps := []struct {
		name string
		do   func(testing.TB)
	}{
		{"reset", i.Reset},
		{"restart", i.Restart},
		{"reset after restart", i.Reset},
	}
	for _, step := range steps {
		extendPCR0(t, i)
		step.do(t)
		getRandom(t, i)
		if got := pcr0(t, i); got != zeroPCR {
			t.Errorf("%s: PCR 0 = %s; want zero (PCRs reset)", step.name, got)
		}
		if got := readNV(t, i); got != "persist!" {
			t.Errorf("%s: NV index holds %q; want %q (persistent state kept)", step.name, got, "persist!")
		}
	}

	i.Stop()
	i.Stop() // idempotent
	if connectable(i.Socket) {
		t.Error("server socket still accepts connections after Stop")
	}
	if _, err := i.transmit(cmdGetRandom8); err == nil {
		t.Error("transmit succeeded after Stop")
	}
}

func TestStartWithState(t *testing.T) {
	state := filepath.Join(t.TempDir(), "tpmstate")
	first := StartWithState(t, state)
	if first.StateDir != state {
		t.Fatalf("StateDir = %q; want %q", first.StateDir, state)
	}
	defineNV(t, first, "survives")
	first.Stop()

	second := StartWithState(t, state)
	if second.Socket == first.Socket {
		t.Errorf("second instance reuses socket path %q", second.Socket)
	}
	if got := readNV(t, second); got != "survives" {
		t.Fatalf("NV index in reused state = %q; want %q", got, "survives")
	}

	// A fresh instance does not see that state.
	fresh := Start(t)
	cmd := exec.Command("tpm2_nvread", nvIndex, "-C", "o")
	cmd.Env = append(os.Environ(), fresh.Env()...)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("tpm2_nvread on a fresh TPM succeeded: %s", out)
	}
}

func TestConcurrentInstances(t *testing.T) {
	var wg sync.WaitGroup
	instances := make([]*Instance, 3)
	for n := range instances {
		instances[n] = Start(t)
	}
	for _, i := range instances {
		wg.Go(func() {
			// Fatal is not allowed off the test goroutine; transmit directly.
			resp, err := i.transmit(cmdGetRandom8)
			if err != nil {
				t.Error(err)
				return
			}
			if rc := responseCode(resp); rc != 0 {
				t.Errorf("%s: rc %#x", i.Socket, rc)
			}
		})
	}
	wg.Wait()
}

func TestSpecAndEnv(t *testing.T) {
	i := &Instance{Socket: "/tmp/x/tpm.sock", Ctrl: "/tmp/x/tpm.sock.ctrl"}
	tests := []struct {
		name, got, want string
	}{
		{"Spec", i.Spec(), "swtpm:unix:/tmp/x/tpm.sock"},
		{"Env", strings.Join(i.Env(), "\n"), "TPM2TOOLS_TCTI=swtpm:path=/tmp/x/tpm.sock"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q; want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestLongTempDir starts swtpm when TMPDIR is too deep for a unix socket
// path: the sockets must move to a short directory, removed at cleanup.
func TestLongTempDir(t *testing.T) {
	root, err := os.MkdirTemp("", "swtpmtest-long")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	long := root
	for len(long) < 120 {
		long = filepath.Join(long, strings.Repeat("d", 30))
	}
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}

	var dir string
	t.Run("start", func(t *testing.T) {
		t.Setenv("TMPDIR", long)
		i := Start(t)
		dir = i.Dir
		if len(i.Ctrl) > maxSunPath {
			t.Fatalf("control socket path is %d bytes: %s", len(i.Ctrl), i.Ctrl)
		}
		if strings.HasPrefix(i.Dir, root) {
			t.Fatalf("sockets placed under the long TMPDIR: %s", i.Dir)
		}
		getRandom(t, i)
	})
	if dir == "" {
		t.Fatal("subtest did not start swtpm")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("fallback socket dir %s not removed at cleanup (stat: %v)", dir, err)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the calling goroutine, so a test can observe how Start fails.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (stateDir string)
		want  string
	}{
		{
			name: "swtpm missing",
			setup: func(t *testing.T) string {
				t.Setenv("PATH", t.TempDir())
				return ""
			},
			want: "swtpm not installed: apt-get install swtpm swtpm-tools",
		},
		{
			name: "comma in state dir",
			setup: func(t *testing.T) string {
				return filepath.Join(t.TempDir(), "a,b")
			},
			want: "contains a comma",
		},
		{
			name: "state dir in use",
			setup: func(t *testing.T) string {
				return Start(t).StateDir
			},
			want: "exited during startup (exit status 1); output:\nswtpm:",
		},
		{
			name: "state dir is a file",
			setup: func(t *testing.T) string {
				f := filepath.Join(t.TempDir(), "file")
				if err := os.WriteFile(f, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return f
			},
			want: "create state dir",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stateDir := tt.setup(t)
			r := &fatalRecorder{TB: t}
			done := make(chan *Instance)
			go func() {
				var i *Instance
				defer func() { done <- i }()
				i = StartWithState(r, stateDir)
			}()
			if i := <-done; i != nil {
				t.Fatalf("StartWithState succeeded: %+v", i)
			}
			if !strings.Contains(r.msg, tt.want) || !strings.HasPrefix(r.msg, "swtpmtest: ") {
				t.Fatalf("failure message %q; want it to start with %q and contain %q", r.msg, "swtpmtest: ", tt.want)
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defgh", "ijklmnop", "q"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := b.String(); got != "jklmnopq" {
		t.Fatalf("tail = %q; want %q", got, "jklmnopq")
	}
}

// connectable reports whether a unix socket accepts a connection.
func connectable(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
