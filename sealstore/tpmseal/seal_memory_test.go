//go:build linux

package tpmseal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/icn/icn-agent/internal/edlocked"
	"github.com/icn/icn-agent/internal/memscan"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// TestSealLeavesNoPlaintext seals a seed generated straight into locked
// memory, with and without a PIN, and then reads all of this process's
// readable memory for the seed and the PIN's authValue: apart from the
// locked buffers the test keeps them in, they must be nowhere, the
// garbage collector's unreachable heap memory included. The search
// patterns are slices of those locked buffers, and the memory is read
// into a locked buffer too, so the scan makes no copy of its own.
//
// On swtpm, the TPM is another process and nothing is excluded. The
// in-process simulator is a TPM inside this process: TPM2_Create builds
// the object in one of its object slots (the C array s_objects, which it
// does not clear), as a TPM does in its own memory. With the simulator,
// and only there, matches in the executable's .bss, where the linker put
// that array, are logged and not counted.
func TestSealLeavesNoPlaintext(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) { testSealLeavesNoPlaintext(t, kind) })
	}
}

func testSealLeavesNoPlaintext(t *testing.T, kind string) {
	f := newFixture(t, kind, nil)
	var tpmLo, tpmHi uint64 // the simulator's static memory
	if kind == "sim" {
		tpmLo, tpmHi = bssSection(t)
	}
	for _, withPIN := range []bool{false, true} {
		name := "no PIN"
		if withPIN {
			name = "PIN"
		}
		t.Run(name, func(t *testing.T) {
			// seed || PIN authValue || PIN, in locked memory.
			const pinLen = 24
			sec, err := secmem.New(2*sha256.Size + pinLen)
			if err != nil {
				t.Fatal(err)
			}
			defer sec.Destroy()
			seed := sec.Bytes()[:sealstore.SeedSize]
			if _, err := rand.Read(seed); err != nil {
				t.Fatal(err)
			}
			patterns := []memscan.Pattern{{Name: "seed", Bytes: seed}, {Name: "seed[:16]", Bytes: seed[:16]}, {Name: "seed[16:]", Bytes: seed[16:]}}
			opts := tpmseal.SealOptions{Name: "hygiene", PCRs: []int{7}}
			if withPIN {
				auth := sec.Bytes()[sha256.Size : 2*sha256.Size]
				pin := sec.Bytes()[2*sha256.Size:]
				var raw [pinLen / 2]byte
				rand.Read(raw[:])
				hex.Encode(pin, raw[:])
				edlocked.Deep(func() {
					h := sha256.Sum256(pin)
					for bytes.IndexByte(h[:], 0) >= 0 {
						h = sha256.Sum256(h[:])
					}
					copy(auth, h[:])
					clear(h[:])
					runtime.KeepAlive(&h)
				})
				opts.PIN = pin
				patterns = append(patterns, memscan.Pattern{Name: "PIN authValue", Bytes: auth},
					memscan.Pattern{Name: "PIN authValue[:16]", Bytes: auth[:16]}, memscan.Pattern{Name: "PIN authValue[16:]", Bytes: auth[16:]})
			}
			b, err := tpmseal.Seal(context.Background(), f.tpm, seed, opts)
			if err != nil {
				t.Fatal(err)
			}
			// The blob seals this seed (its public key is derived from it).
			if want, err := sealstore.PublicKey(seed); err != nil || !bytes.Equal(b.PublicKey.Marshal(), want.Marshal()) {
				t.Fatalf("blob public key differs from the seed's (%v)", err)
			}
			runtime.GC()

			hits, own := scanSelf(t, patterns, sec.Bytes())
			if own == 0 {
				t.Fatal("the scan did not find the seed in its own locked buffer: it proves nothing")
			}
			for _, h := range hits {
				if h.Addr >= tpmLo && h.Addr < tpmHi {
					t.Logf("in the simulator's static memory (the TPM's own): %s at %#x", h.Pattern, h.Addr)
					continue
				}
				t.Errorf("%v (preceded by %x)", h, h.Before)
			}
		})
	}
}

// scanSelf reads every readable mapping of this process through
// /proc/self/mem into a locked buffer and returns where patterns occur,
// except inside keep (the locked memory holding the secrets on purpose),
// and how many matches it found there.
func scanSelf(t *testing.T, patterns []memscan.Pattern, keep []byte) (hits []memscan.Hit, own int) {
	t.Helper()
	const chunk = 1 << 20
	buf, err := secmem.New(chunk)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Destroy()
	span := func(b []byte) (lo, hi uint64) {
		lo = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
		return lo, lo + uint64(len(b))
	}
	keepLo, keepHi := span(keep)
	bufLo, bufHi := span(buf.Bytes())
	longest := 0
	for _, p := range patterns {
		longest = max(longest, len(p.Bytes))
	}

	maps, err := memscan.Maps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	var read uint64
	seen := map[uint64]bool{}
	for _, m := range maps {
		if !strings.HasPrefix(m.Perms, "r") || m.Path == "[vvar]" || m.Path == "[vvar_vclock]" || m.Path == "[vsyscall]" {
			continue
		}
		if m.Start < bufHi && bufLo < m.End {
			continue // the scan's own buffer: what it holds was read elsewhere
		}
		// Chunks overlap by longest-1 bytes, so that no match is cut.
		for addr := m.Start; addr < m.End; {
			n := min(uint64(chunk), m.End-addr)
			got, err := mem.ReadAt(buf.Bytes()[:n], int64(addr))
			if got <= 0 {
				if strings.HasPrefix(m.Perms, "rw") {
					t.Errorf("cannot read %#x-%#x %s: %v", m.Start, m.End, m.Path, err)
				}
				break
			}
			read += uint64(got)
			data := buf.Bytes()[:got]
			for _, p := range patterns {
				for off := 0; ; {
					i := bytes.Index(data[off:], p.Bytes)
					if i < 0 {
						break
					}
					at := addr + uint64(off+i)
					off += i + 1
					key := at<<8 | uint64(len(p.Name))
					if seen[key] {
						continue
					}
					seen[key] = true
					if at >= keepLo && at < keepHi {
						own++
						continue
					}
					// Eight bytes before the match (a TPM2B's size, say)
					// tell what holds it; no more, so as to copy no
					// pattern.
					h := memscan.Hit{Pattern: p.Name, Addr: at, Mapping: m}
					h.Before = bytes.Clone(data[max(0, off-1-8) : off-1])
					hits = append(hits, h)
				}
			}
			if got < int(n) || addr+uint64(got) >= m.End {
				break
			}
			addr += uint64(got) - uint64(longest-1)
		}
	}
	clear(buf.Bytes())
	if read == 0 {
		t.Fatal("the scan read nothing")
	}
	t.Logf("scanned %d MiB", read>>20)
	return hits, own
}

// bssSection returns the address range of the .bss section of this test
// executable (a non-PIE ELF file, whose section addresses are the run-time
// ones, as go test builds it on linux; section headers survive the
// stripping of its symbols). The linker puts the C simulator's zeroed
// globals there, s_objects among them; Go's own there are the runtime's
// pointer-holding globals.
func bssSection(t *testing.T) (lo, hi uint64) {
	t.Helper()
	exe, err := elf.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	if exe.Type != elf.ET_EXEC {
		t.Fatalf("the test executable is %v, not a non-PIE executable: cannot place its .bss", exe.Type)
	}
	bss := exe.Section(".bss")
	if bss == nil || bss.Size == 0 {
		t.Fatal("the test executable has no .bss section")
	}
	return bss.Addr, bss.Addr + bss.Size
}
