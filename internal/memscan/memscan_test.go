//go:build linux

package memscan

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/icn/icn-agent/internal/secmem"
)

// TestMain lets the test binary play the scanned process: with
// MEMSCAN_CHILD=MODE:HEX it decodes the secret into the heap, wipes it
// if MODE is "wipe", moves it to a secmem buffer if MODE is "locked", says
// "ready" and waits for its stdin to close.
func TestMain(m *testing.M) {
	if v := os.Getenv("MEMSCAN_CHILD"); v != "" {
		mode, hx, _ := strings.Cut(v, ":")
		os.Unsetenv("MEMSCAN_CHILD")
		secret, err := hex.DecodeString(hx)
		if err != nil {
			os.Exit(2)
		}
		var buf *secmem.Buffer
		switch mode {
		case "wipe":
			clear(secret)
		case "locked":
			if buf, err = secmem.New(len(secret)); err != nil {
				os.Exit(2)
			}
			copy(buf.Bytes(), secret)
			clear(secret)
		}
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		runtime.KeepAlive(secret)
		runtime.KeepAlive(buf)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child starts the test binary holding secret (or having wiped it) and
// returns its pid.
func child(t *testing.T, mode string, secret []byte) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MEMSCAN_CHILD="+mode+":"+hex.EncodeToString(secret))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	return cmd.Process.Pid
}

func TestScan(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading another process's memory needs root")
	}
	tests := []struct {
		mode       string
		wantFound  bool
		wantLocked bool
	}{
		{"keep", true, false}, // positive control: the scanner finds a live secret
		{"wipe", false, false},
		{"locked", true, true}, // and tells a secmem buffer's mapping by its flags
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			secret := make([]byte, 32)
			rand.Read(secret)
			pid := child(t, tt.mode, secret)
			hits, st, err := Scan(pid, []Pattern{{"secret", secret}})
			if err != nil {
				t.Fatal(err)
			}
			if st.Mappings == 0 || st.Bytes < 1<<20 {
				t.Fatalf("scanned only %d mappings, %d bytes", st.Mappings, st.Bytes)
			}
			if found := len(hits) > 0; found != tt.wantFound {
				t.Fatalf("found %v (%v); want found %v", found, hits, tt.wantFound)
			}
			for _, h := range hits {
				if h.Mapping.Path != "" || h.Symbol != "" {
					t.Errorf("secret decoded into a Go slice found outside anonymous memory: %v", h)
				}
				if h.Mapping.Locked() != tt.wantLocked {
					t.Errorf("hit %v in a mapping with flags %v: Locked() = %v, want %v", h, h.Mapping.Flags, h.Mapping.Locked(), tt.wantLocked)
				}
			}
		})
	}
}

func TestScanRejectsShortPatterns(t *testing.T) {
	if _, _, err := Scan(os.Getpid(), []Pattern{{"short", []byte("0123456789")}}); err == nil {
		t.Fatal("a 10-byte pattern was accepted")
	}
}

// TestScanMappingAcrossChunks checks the chunk overlap: a pattern split
// across a chunk boundary is found once, and one inside the overlap is
// not reported twice.
func TestScanMappingAcrossChunks(t *testing.T) {
	pat := []byte("0123456789abcdefXYZ")
	mem := make([]byte, 3*chunk)
	for _, at := range []int{chunk - 5, 2*chunk - len(pat), 100} {
		copy(mem[at:], pat)
	}
	var got []uint64
	m := Mapping{Start: 0x1000, End: 0x1000 + uint64(len(mem))}
	buf := make([]byte, chunk+len(pat))
	read, ok := scanMapping(offsetReader{mem, 0x1000}, m, []Pattern{{"p", pat}}, buf, len(pat), func(_ string, addr uint64) {
		got = append(got, addr-0x1000)
	})
	if !ok || read != uint64(len(mem)) {
		t.Fatalf("read %d, %v", read, ok)
	}
	want := []uint64{100, chunk - 5, 2*chunk - uint64(len(pat))}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("found at %v; want %v", got, want)
	}
}

type offsetReader struct {
	b    []byte
	base int64
}

func (r offsetReader) ReadAt(p []byte, off int64) (int, error) {
	return copy(p, r.b[off-r.base:]), nil
}

func TestEd25519Patterns(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	ps := Ed25519Patterns(seed)
	h := sha512.Sum512(seed)
	byName := map[string][]byte{}
	for _, p := range ps {
		byName[p.Name] = p.Bytes
		if len(p.Bytes) < 16 {
			t.Errorf("pattern %s is %d bytes", p.Name, len(p.Bytes))
		}
	}
	if !bytes.Equal(byName["seed"], seed) || !bytes.Equal(byName["prefix"], h[32:]) || !bytes.Equal(byName["scalar"], h[:32]) {
		t.Fatal("seed, scalar or prefix pattern is wrong")
	}
	// The clamped scalar is what signs: its public point is the key.
	c := byName["clamped scalar"]
	if c[0]&7 != 0 || c[31]&0xc0 != 0x40 {
		t.Fatalf("scalar not clamped: %x", c)
	}
	if w := byName["scalar words"]; w[0] != h[7] || w[7] != h[0] {
		t.Fatalf("scalar words are not little-endian words of the hash")
	}
}
