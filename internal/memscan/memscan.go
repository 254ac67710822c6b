//go:build linux

// Package memscan searches the memory of a running process for secrets.
// Tests use it to prove that icn-agent forgets a seed when it says it
// does: after lock, expiry, removal or a drop, neither the seed nor the
// key derived from it may be left anywhere in the agent's address space.
//
// [Scan] reads /proc/PID/maps for the process's writable mappings (a
// secret cannot have been written to a read-only one) and reads each
// through /proc/PID/mem, the way a debugger or an attacker with ptrace
// rights would. That needs the right to ptrace the process: as root it
// works even on a process that made itself non-dumpable, as icn-agent
// does; otherwise Scan fails with a permission error. Memory a process
// marked MADV_DONTDUMP is read like any other: that flag keeps it out of
// core files, not out of reach.
//
// Each [Hit] says where a pattern was found: the mapping (its path, or
// [heap], [stack], or anonymous: the Go heap and goroutine stacks, thread
// stacks, mmap'ed C allocations) and, for the process's own data and bss
// segments, the symbol of the executable that holds it (for example a C
// global of an in-process TPM simulator). Since Go 1.26 randomizes the
// heap's base address, the Go heap is not told apart from other
// anonymous memory. A mapping's kernel flags (/proc/PID/smaps VmFlags)
// tell memory that is mlock'ed and left out of core dumps, as secmem's
// buffers are ([Mapping.Locked]).
//
//	hits, st, err := memscan.Scan(pid, memscan.Ed25519Patterns(seed))
//	if err != nil || st.Bytes == 0 { t.Fatal(...) }
//	for _, h := range hits { t.Errorf("%v", h) }
//
// [Ed25519Patterns] names what to look for after an Ed25519 seed is
// gone: the seed, its halves, and the two halves of SHA-512(seed), the
// clamped scalar and the nonce prefix, in byte order and as the
// little-endian words of a SHA-512 state.
package memscan

import (
	"bufio"
	"bytes"
	"crypto/sha512"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Pattern is a byte string to look for.
type Pattern struct {
	Name  string
	Bytes []byte
}

// Ed25519Patterns returns the patterns that reveal an Ed25519 private key
// with this 32-byte seed:
//
//	seed, seed[:16], seed[16:]     the seed, and each half of it
//	scalar, clamped scalar         SHA-512(seed)[:32], as hashed and as clamped
//	prefix                         SHA-512(seed)[32:], the nonce prefix
//	scalar words, prefix words     the same halves as a SHA-512 state holds
//	                               them: eight little-endian uint64 words
//
// Every pattern is at least 16 random-looking bytes: a match is never a
// coincidence.
func Ed25519Patterns(seed []byte) []Pattern {
	h := sha512.Sum512(seed)
	clamped := slices.Clone(h[:32])
	clamped[0] &= 248
	clamped[31] &= 127
	clamped[31] |= 64
	var words [64]byte
	for i := 0; i < 8; i++ {
		binary.LittleEndian.PutUint64(words[8*i:], binary.BigEndian.Uint64(h[8*i:]))
	}
	return []Pattern{
		{"seed", slices.Clone(seed)},
		{"seed[:16]", slices.Clone(seed[:16])},
		{"seed[16:]", slices.Clone(seed[16:])},
		{"scalar", slices.Clone(h[:32])},
		{"clamped scalar", clamped},
		{"prefix", slices.Clone(h[32:])},
		{"scalar words", slices.Clone(words[:32])},
		{"prefix words", slices.Clone(words[32:])},
	}
}

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string
	Offset     uint64
	Path       string // "" for anonymous memory, or [heap], [stack]...
	// Flags are the kernel's VmFlags for the mapping, from
	// /proc/PID/smaps: "lo" for mlock'ed, "dd" for MADV_DONTDUMP, "wf"
	// for MADV_WIPEONFORK... Nil if smaps could not be read.
	Flags []string
}

// Locked reports whether the mapping is mlock'ed and left out of core
// dumps, as a secmem.Buffer is. The kernel merges adjacent mappings with
// the same flags, so one such mapping may hold several buffers.
func (m Mapping) Locked() bool {
	return slices.Contains(m.Flags, "lo") && slices.Contains(m.Flags, "dd")
}

// Hit is one place a pattern was found.
type Hit struct {
	Pattern string
	Addr    uint64
	Mapping Mapping
	// Symbol is the executable's data symbol holding Addr, "" if none.
	Symbol string
	// Before and After are up to 16 bytes of memory on either side of
	// the match, to tell what holds it (a TPM2B's size prefix, say).
	Before, After []byte
}

// Where describes the memory a hit is in.
func (h Hit) Where() string {
	switch {
	case h.Symbol != "":
		return fmt.Sprintf("static variable %s of the executable", h.Symbol)
	case h.Mapping.Path == "":
		return fmt.Sprintf("anonymous mapping %#x-%#x (Go heap and stacks, thread stacks, C allocations)", h.Mapping.Start, h.Mapping.End)
	}
	return h.Mapping.Path
}

func (h Hit) String() string {
	return fmt.Sprintf("%s at %#x: %s", h.Pattern, h.Addr, h.Where())
}

// Stats tells how much was scanned, so that a scan that read nothing
// cannot pass for a clean one.
type Stats struct {
	Mappings int    // writable mappings read
	Bytes    uint64 // bytes read
	Skipped  int    // writable mappings that could not be read
	// Unread are the mappings at the addresses of those counted in
	// Skipped that still could not be read when tried again after the
	// scan: memory the scan did not look at. (A mapping unmapped while
	// the scan ran, a freed buffer say, holds nothing any more, and what
	// is mapped there instead is read.)
	Unread []Mapping
}

// chunk is how much of a mapping is read at a time.
const chunk = 1 << 20

// Maps returns the mappings of process pid.
func Maps(pid int) ([]Mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, fmt.Errorf("memscan: %w", err)
	}
	defer f.Close()
	var out []Mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		var m Mapping
		var err1, err2, err3 error
		m.Start, err1 = strconv.ParseUint(lo, 16, 64)
		m.End, err2 = strconv.ParseUint(hi, 16, 64)
		m.Offset, err3 = strconv.ParseUint(fields[2], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("memscan: malformed maps line %q", sc.Text())
		}
		m.Perms = fields[1]
		if len(fields) >= 6 {
			m.Path = strings.Join(fields[5:], " ")
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("memscan: read maps: %w", err)
	}
	flags := vmFlags(pid)
	for i := range out {
		out[i].Flags = flags[out[i].Start]
	}
	return out, nil
}

// vmFlags returns the VmFlags line of each mapping in /proc/PID/smaps, by
// start address; none if smaps cannot be read.
func vmFlags(pid int) map[uint64][]string {
	out := map[uint64][]string{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	var start uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			out[start] = strings.Fields(rest)
			continue
		}
		// A mapping's header line: "start-end perms offset ...". Other
		// lines are "Key:   value".
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasSuffix(fields[0], ":") {
			continue
		}
		lo, _, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(lo, 16, 64); err == nil {
			start = v
		}
	}
	return out
}

// Scan searches every readable, writable mapping of process pid for
// patterns and returns where it found them.
func Scan(pid int, patterns []Pattern) ([]Hit, Stats, error) {
	var st Stats
	for _, p := range patterns {
		if len(p.Bytes) < 16 {
			return nil, st, fmt.Errorf("memscan: pattern %s is %d bytes; at least 16 are needed to rule out chance", p.Name, len(p.Bytes))
		}
	}
	maps, err := Maps(pid)
	if err != nil {
		return nil, st, err
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, st, fmt.Errorf("memscan: %w (scanning another process needs ptrace rights: run as root)", err)
	}
	defer mem.Close()
	syms := dataSymbols(pid)

	longest := 0
	for _, p := range patterns {
		longest = max(longest, len(p.Bytes))
	}
	var hits []Hit
	var skipped []Mapping
	buf := make([]byte, chunk+longest)
	scannable := func(m Mapping) bool {
		return strings.HasPrefix(m.Perms, "rw") && m.Path != "[vvar]" && m.Path != "[vvar_vclock]" && m.Path != "[vsyscall]"
	}
	scanOne := func(m Mapping) bool {
		read, ok := scanMapping(mem, m, patterns, buf, longest, func(name string, addr uint64) {
			h := Hit{Pattern: name, Addr: addr, Mapping: m, Symbol: syms.lookup(addr)}
			n := 0
			for _, p := range patterns {
				if p.Name == name {
					n = len(p.Bytes)
				}
			}
			h.Before = context(mem, m, addr-min(16, addr-m.Start), addr)
			h.After = context(mem, m, addr+uint64(n), min(addr+uint64(n)+16, m.End))
			hits = append(hits, h)
		})
		st.Bytes += read
		return ok
	}
	for _, m := range maps {
		if !scannable(m) {
			continue
		}
		if scanOne(m) {
			st.Mappings++
		} else {
			st.Skipped++
			skipped = append(skipped, m)
		}
	}
	// A mapping that could not be read was usually unmapped while the scan
	// ran (a buffer freed meanwhile): what is there now at its addresses
	// is read again, and only what still cannot be read is Unread.
	if len(skipped) > 0 {
		now, err := Maps(pid)
		if err != nil {
			return nil, st, err
		}
		for _, n := range now {
			if !scannable(n) || !slices.ContainsFunc(skipped, func(m Mapping) bool { return n.Start < m.End && m.Start < n.End }) {
				continue
			}
			if scanOne(n) {
				st.Mappings++
			} else {
				st.Unread = append(st.Unread, n)
			}
		}
	}
	return hits, st, nil
}

// context reads the bytes in [from, to) of the mapping, or nil.
func context(mem io.ReaderAt, m Mapping, from, to uint64) []byte {
	if from >= to || from < m.Start || to > m.End {
		return nil
	}
	b := make([]byte, to-from)
	n, _ := mem.ReadAt(b, int64(from))
	return b[:n]
}

// scanMapping reads m in chunks overlapping by longest-1 bytes, so a
// pattern across a chunk boundary is found, and reports each match once.
func scanMapping(mem io.ReaderAt, m Mapping, patterns []Pattern, buf []byte, longest int, found func(string, uint64)) (uint64, bool) {
	var read uint64
	carry := 0 // bytes kept from the previous chunk at the start of buf
	for addr := m.Start; addr < m.End; {
		n := min(uint64(chunk), m.End-addr)
		got, err := mem.ReadAt(buf[carry:carry+int(n)], int64(addr))
		if got <= 0 {
			return read, read > 0 || err == nil
		}
		read += uint64(got)
		data := buf[:carry+got]
		base := addr - uint64(carry)
		for _, p := range patterns {
			for off := 0; ; {
				i := bytes.Index(data[off:], p.Bytes)
				if i < 0 {
					break
				}
				pos := off + i
				// A match wholly inside the carried bytes was reported
				// with the previous chunk.
				if pos+len(p.Bytes) > carry {
					found(p.Name, base+uint64(pos))
				}
				off = pos + 1
			}
		}
		addr += uint64(got)
		carry = min(longest-1, len(data))
		copy(buf, data[len(data)-carry:])
		if got < int(n) {
			return read, true // a hole: keep what was read
		}
	}
	return read, true
}

// symbols are the executable's data and bss objects, sorted by address.
type symbols []elf.Symbol

func (s symbols) lookup(addr uint64) string {
	i := sort.Search(len(s), func(i int) bool { return s[i].Value > addr }) - 1
	if i < 0 {
		return ""
	}
	if sym := s[i]; addr < sym.Value+max(sym.Size, 1) {
		return sym.Name
	}
	return ""
}

// dataSymbols returns the object symbols of the process's executable, if
// it is a non-PIE ELF file with a symbol table (as go test binaries and
// default Go builds on linux/amd64 are: their symbol addresses are the
// run-time addresses). For anything else it returns none.
func dataSymbols(pid int) symbols {
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		return nil
	}
	all, err := f.Symbols()
	if errors.Is(err, elf.ErrNoSymbols) || err != nil {
		return nil
	}
	var out symbols
	for _, s := range all {
		if elf.ST_TYPE(s.Info) == elf.STT_OBJECT && s.Value != 0 {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value < out[j].Value })
	return out
}
