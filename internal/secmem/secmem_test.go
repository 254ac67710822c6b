//go:build linux

package secmem

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// childEnv selects a child-process scenario when the test binary re-executes
// itself. Scenarios that change process-wide state (dumpable flag, rlimits,
// uid) run in a child so the main test process stays untouched.
const childEnv = "SECMEM_TEST_CHILD"

func TestMain(m *testing.M) {
	switch scenario := os.Getenv(childEnv); scenario {
	case "":
		os.Exit(m.Run())
	case "harden":
		exitChild(childHarden())
	case "nolock":
		exitChild(childNoLock())
	default:
		exitChild(fmt.Errorf("unknown scenario %q", scenario))
	}
}

func exitChild(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	fmt.Println("child ok")
	os.Exit(0)
}

// runChild re-executes the test binary in the given scenario and fails the
// test unless the child reports success.
func runChild(t *testing.T, scenario string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+scenario)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child %q: %v\nstdout: %s\nstderr: %s", scenario, err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "child ok") {
		t.Fatalf("child %q did not report success\nstdout: %s\nstderr: %s", scenario, stdout.String(), stderr.String())
	}
}

func dumpable() (int, error) {
	return unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
}

func childHarden() error {
	// Start from a state where hardening has something to change: core
	// dumps allowed (containers often start with RLIMIT_CORE 0).
	var before unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &before); err != nil {
		return err
	}
	want := unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if before.Max < want.Max && os.Geteuid() != 0 {
		want = unix.Rlimit{Cur: before.Max, Max: before.Max}
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &want); err != nil {
		return fmt.Errorf("raise RLIMIT_CORE: %w", err)
	}
	if d, err := dumpable(); err != nil || d != 1 {
		return fmt.Errorf("before HardenProcess: dumpable = %d, %v; want 1", d, err)
	}

	if err := HardenProcess(); err != nil {
		return err
	}

	if d, err := dumpable(); err != nil || d != 0 {
		return fmt.Errorf("after HardenProcess: dumpable = %d, %v; want 0", d, err)
	}
	var after unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &after); err != nil {
		return err
	}
	if after.Cur != 0 || after.Max != 0 {
		return fmt.Errorf("after HardenProcess: RLIMIT_CORE = %+v; want 0/0", after)
	}
	// The hard limit is 0, so the process cannot undo it without privilege;
	// as root (CAP_SYS_RESOURCE) it could, so only check when unprivileged.
	if os.Geteuid() != 0 {
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 1, Max: 1}); err == nil {
			return fmt.Errorf("raising RLIMIT_CORE after HardenProcess succeeded")
		}
	}
	return nil
}

func childNoLock() error {
	// An unprivileged process with RLIMIT_MEMLOCK 0 cannot mlock anything.
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_MEMLOCK, 0): %w", err)
	}
	if os.Geteuid() == 0 {
		// Root has CAP_IPC_LOCK and ignores the limit; become nobody,
		// which drops every capability on all threads.
		if err := unix.Setgid(65534); err != nil {
			return fmt.Errorf("setgid: %w", err)
		}
		if err := unix.Setuid(65534); err != nil {
			return fmt.Errorf("setuid: %w", err)
		}
	}
	if err := unix.Mlock(make([]byte, 1)); err == nil {
		return fmt.Errorf("mlock unexpectedly allowed; scenario is not testing anything")
	}
	b, err := New(64)
	if err != nil {
		return fmt.Errorf("New with mlock refused: %w", err)
	}
	if b.Locked() {
		return fmt.Errorf("Locked() = true with RLIMIT_MEMLOCK 0")
	}
	p := b.Bytes()
	if len(p) != 64 {
		return fmt.Errorf("len(Bytes()) = %d; want 64", len(p))
	}
	for i := range p {
		p[i] = byte(i)
	}
	for i := range p {
		if p[i] != byte(i) {
			return fmt.Errorf("byte %d = %d after write", i, p[i])
		}
	}
	b.Destroy()
	if b.Bytes() != nil {
		return fmt.Errorf("Bytes() non-nil after Destroy")
	}
	return nil
}

func TestNewSizes(t *testing.T) {
	page := os.Getpagesize()
	tests := []struct {
		name    string
		n       int
		wantErr bool
	}{
		{"one byte", 1, false},
		{"ed25519 seed", 32, false},
		{"ed25519 private key", 64, false},
		{"exactly a page", page, false},
		{"page plus one", page + 1, false},
		{"maximum", MaxSize, false},
		{"zero", 0, true},
		{"negative", -1, true},
		{"over maximum", MaxSize + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.n)
			if tt.wantErr {
				if err == nil {
					b.Destroy()
					t.Fatalf("New(%d) succeeded; want error", tt.n)
				}
				if !strings.HasPrefix(err.Error(), "secmem: ") {
					t.Errorf("error %q lacks package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%d): %v", tt.n, err)
			}
			defer b.Destroy()
			p := b.Bytes()
			if len(p) != tt.n || cap(p) != tt.n || b.Len() != tt.n {
				t.Fatalf("len/cap/Len = %d/%d/%d; want %d", len(p), cap(p), b.Len(), tt.n)
			}
			for i, c := range p {
				if c != 0 {
					t.Fatalf("fresh buffer byte %d = %#x; want 0", i, c)
				}
			}
		})
	}
}

func TestBufferLifecycle(t *testing.T) {
	b, err := New(64)
	if err != nil {
		t.Fatal(err)
	}
	p := b.Bytes()
	for i := range p {
		p[i] = byte(0xA0 + i)
	}
	// Bytes returns a view of the same memory every time.
	q := b.Bytes()
	for i := range q {
		if q[i] != byte(0xA0+i) {
			t.Fatalf("byte %d = %#x after write; want %#x", i, q[i], byte(0xA0+i))
		}
	}
	if &p[0] != &q[0] {
		t.Fatal("Bytes returned different backing memory on second call")
	}

	b.Destroy()
	if got := b.Bytes(); got != nil {
		t.Fatalf("Bytes() after Destroy = %v; want nil", got)
	}
	if b.Locked() {
		t.Error("Locked() after Destroy = true")
	}
	if b.Len() != 0 {
		t.Errorf("Len() after Destroy = %d", b.Len())
	}
	b.Destroy() // idempotent: must not panic or double-unmap

	var nilBuf *Buffer
	nilBuf.Destroy()
	if nilBuf.Bytes() != nil || nilBuf.Locked() || nilBuf.Len() != 0 {
		t.Error("nil Buffer methods not inert")
	}
}

// TestWipe checks Wipe on ordinary slices and on buffer memory. Destroy's
// own wipe cannot be observed (the memory is unmapped right after), but it
// is this same function applied to the live mapping.
func TestWipe(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one", []byte{0xFF}},
		{"seed", bytes.Repeat([]byte{0x5A}, 32)},
		{"odd length", bytes.Repeat([]byte{0x11, 0x22, 0x33}, 333)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Wipe(tt.in)
			for i, c := range tt.in {
				if c != 0 {
					t.Fatalf("byte %d = %#x after Wipe", i, c)
				}
			}
		})
	}

	t.Run("buffer memory", func(t *testing.T) {
		b, err := New(32)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Destroy()
		copy(b.Bytes(), bytes.Repeat([]byte{0xEE}, 32))
		Wipe(b.Bytes())
		if !bytes.Equal(b.Bytes(), make([]byte, 32)) {
			t.Fatalf("buffer after Wipe = %x", b.Bytes())
		}
	})

	t.Run("subslice only", func(t *testing.T) {
		p := []byte{1, 2, 3, 4}
		Wipe(p[1:3])
		if !bytes.Equal(p, []byte{1, 0, 0, 4}) {
			t.Fatalf("got %v; want [1 0 0 4]", p)
		}
	})
}

// vmLckKB reads the process's locked memory (VmLck) in KiB.
func vmLckKB(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "VmLck:")
		if !ok {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		if err != nil {
			t.Fatalf("parse VmLck line %q: %v", s.Text(), err)
		}
		return kb
	}
	t.Fatal("no VmLck line in /proc/self/status")
	return 0
}

func TestLockedAccounting(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		t.Fatal(err)
	}
	const n = 3 * 4096
	if os.Geteuid() != 0 && lim.Cur < 1<<20 {
		t.Fatalf("test needs root or RLIMIT_MEMLOCK >= 1 MiB (have %d bytes)", lim.Cur)
	}
	pageKB := os.Getpagesize() / 1024

	before := vmLckKB(t)
	b, err := New(n)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Locked() {
		b.Destroy()
		t.Fatal("Locked() = false although mlock is permitted")
	}
	during := vmLckKB(t)
	if during-before < pageKB || during-before < n/1024 {
		b.Destroy()
		t.Fatalf("VmLck went from %d to %d kB; want an increase of at least %d kB", before, during, n/1024)
	}
	b.Destroy()
	if after := vmLckKB(t); after != before {
		t.Fatalf("VmLck after Destroy = %d kB; want %d kB", after, before)
	}
}

func TestNewWithoutMlock(t *testing.T) {
	runChild(t, "nolock")
}

func TestHardenProcess(t *testing.T) {
	// The main test process must not be affected by the child.
	if d, err := dumpable(); err != nil || d != 1 {
		t.Fatalf("test process dumpable = %d, %v; want 1 before the child runs", d, err)
	}
	runChild(t, "harden")
	if d, err := dumpable(); err != nil || d != 1 {
		t.Fatalf("test process dumpable = %d, %v after the child ran; want 1", d, err)
	}
}

// vmFlags returns the VmFlags of the mapping containing addr, as listed in
// /proc/self/smaps ("lo" locked, "dd" not dumped, "wf" wiped on fork).
func vmFlags(t *testing.T, addr uintptr) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	inside := false
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				inside = uint64(addr) >= start && uint64(addr) < end
				continue
			}
		}
		if inside && fields[0] == "VmFlags:" {
			flags := make(map[string]bool)
			for _, f := range fields[1:] {
				flags[f] = true
			}
			return flags
		}
	}
	t.Fatalf("no mapping containing %#x in /proc/self/smaps", addr)
	return nil
}

func TestMappingFlags(t *testing.T) {
	b, err := New(32)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Destroy()
	flags := vmFlags(t, uintptr(unsafe.Pointer(&b.Bytes()[0])))
	for _, tt := range []struct {
		flag, meaning string
	}{
		{"lo", "mlock'ed"},
		{"dd", "MADV_DONTDUMP"},
		{"wf", "MADV_WIPEONFORK"},
	} {
		if !flags[tt.flag] {
			t.Errorf("mapping lacks VmFlag %q (%s); flags: %v", tt.flag, tt.meaning, flags)
		}
	}
}
