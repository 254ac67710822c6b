//go:build linux

// Package secmem keeps secrets out of places they should never reach: swap,
// core dumps, and the address space of forked children.
//
// Memory handed out by the Go runtime is a poor home for key material. The
// garbage collector may copy it, nothing stops the kernel from swapping it to
// disk, and a crash writes it into a core file. A [Buffer] instead lives in
// its own anonymous mapping outside the Go heap:
//
//   - mlock(2) pins it in RAM, so it is never written to swap;
//   - madvise(MADV_DONTDUMP) leaves it out of core dumps;
//   - madvise(MADV_WIPEONFORK) gives a forked child zeroes instead of a copy.
//
// Pinning memory is limited by RLIMIT_MEMLOCK for unprivileged processes.
// When mlock is refused the buffer still works (a secret in unlocked memory
// beats no service at all) and [Buffer.Locked] reports false so the caller
// can warn once.
//
// Typical use, for a cached Ed25519 seed:
//
//	buf, err := secmem.New(ed25519.SeedSize)
//	if err != nil {
//		return err
//	}
//	defer buf.Destroy()
//	copy(buf.Bytes(), unsealedSeed)
//	secmem.Wipe(unsealedSeed)
//
// [HardenProcess] complements buffers at the process level: it makes the
// process non-dumpable (no core files, no ptrace attach by same-uid
// processes, /proc/PID/mem closed to them) and sets the core size limit to
// zero. Call it first thing in main.
package secmem

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// MaxSize is the largest buffer [New] hands out. Secrets are small; a larger
// request is a bug, and locked memory is a scarce resource.
const MaxSize = 1 << 20

// Buffer is a fixed-size secret buffer in its own mmap'ed anonymous region
// (MAP_PRIVATE|MAP_ANONYMOUS), mlock'ed, and marked MADV_DONTDUMP and
// MADV_WIPEONFORK.
//
// The memory is not managed by the garbage collector: call [Buffer.Destroy]
// when done, or the region (and the secret in it) stays mapped until the
// process exits. A Buffer is not safe for concurrent use: Destroy must not
// race with code using the slice returned by [Buffer.Bytes], and the caller
// owns that synchronisation.
type Buffer struct {
	mem    []byte // the usable mapping, a multiple of the page size
	region []byte // mem with a guard page on each side
	n      int    // bytes exposed by Bytes
	locked bool
}

// New returns a zeroed buffer of n bytes, 0 < n <= [MaxSize].
//
// If mlock is refused (typically RLIMIT_MEMLOCK for a non-root user), the
// buffer is still returned usable and [Buffer.Locked] reports false; New
// never fails just because the memory could not be pinned. It does fail if
// the mapping cannot be created or the kernel rejects the madvise hints.
func New(n int) (*Buffer, error) {
	if n <= 0 || n > MaxSize {
		return nil, fmt.Errorf("secmem: buffer size %d out of range 1..%d", n, MaxSize)
	}
	page := os.Getpagesize()
	size := (n + page - 1) / page * page
	// An inaccessible guard page on each side: an overrun faults instead
	// of reaching a neighbour, and two buffers never share one mapping
	// (the kernel merges adjacent mappings of the same kind), so each
	// buffer stays a mapping of its own, locked and unmapped as a whole.
	region, err := unix.Mmap(-1, 0, size+2*page, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("secmem: mmap %d bytes: %w", size+2*page, err)
	}
	mem := region[page : page+size : page+size]
	if err := unix.Mprotect(mem, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		_ = unix.Munmap(region)
		return nil, fmt.Errorf("secmem: mprotect %d bytes: %w", size, err)
	}
	// Advise before anything is written so that no secret byte ever lives
	// in memory that could be dumped or inherited.
	for _, a := range []struct {
		advice int
		name   string
	}{
		{unix.MADV_DONTDUMP, "MADV_DONTDUMP"},
		{unix.MADV_WIPEONFORK, "MADV_WIPEONFORK"},
	} {
		if err := unix.Madvise(mem, a.advice); err != nil {
			_ = unix.Munmap(region)
			return nil, fmt.Errorf("secmem: madvise(%s): %w", a.name, err)
		}
	}
	b := &Buffer{mem: mem, region: region, n: n}
	// EPERM or ENOMEM here means RLIMIT_MEMLOCK; the buffer stays usable.
	b.locked = unix.Mlock(mem) == nil
	return b, nil
}

// Bytes returns the buffer's n bytes, a slice into the locked mapping. Do not
// append to it or keep it past [Buffer.Destroy]: after Destroy the memory is
// unmapped and touching the old slice faults. Bytes returns nil after
// Destroy.
func (b *Buffer) Bytes() []byte {
	if b == nil || b.mem == nil {
		return nil
	}
	return b.mem[:b.n:b.n]
}

// Len returns the size the buffer was created with, or 0 after
// [Buffer.Destroy].
func (b *Buffer) Len() int {
	if b == nil || b.mem == nil {
		return 0
	}
	return b.n
}

// Locked reports whether the buffer is pinned in RAM by mlock. It is false
// when mlock was refused and after [Buffer.Destroy].
func (b *Buffer) Locked() bool {
	return b != nil && b.mem != nil && b.locked
}

// Destroy zeroes the buffer, unlocks it and unmaps it. It is idempotent and a
// no-op on a nil Buffer. It is not safe to call concurrently with users of
// [Buffer.Bytes] or with another Destroy; the caller owns synchronisation.
func (b *Buffer) Destroy() {
	if b == nil || b.mem == nil {
		return
	}
	mem, region := b.mem, b.region
	b.mem, b.region = nil, nil
	b.n = 0
	Wipe(mem)
	if b.locked {
		_ = unix.Munlock(mem)
		b.locked = false
	}
	// Munmap only fails for arguments that cannot occur here (an unaligned
	// or foreign range); the bytes are already zero either way.
	_ = unix.Munmap(region)
}

// Wipe zeroes b in a way the compiler will not elide: the clear is followed
// by a [runtime.KeepAlive] on the slice, so the stores count as used.
//
// Wipe only reaches the bytes it is given. Copies the runtime made earlier
// (slice growth, string conversions, moved stacks) are out of its reach,
// which is why long-lived secrets belong in a [Buffer].
func Wipe(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}

// HardenProcess makes the current process unfit for leaking secrets through
// dumps: it sets PR_SET_DUMPABLE to 0 (no core dump, no ptrace attach and no
// /proc/PID/mem access for other processes of the same user) and sets
// RLIMIT_CORE to 0, soft and hard, so that not even a later PR_SET_DUMPABLE 1
// could produce a core file. Both settings are process-wide and inherited by
// children across fork; the dumpable flag is reset by execve of another
// binary.
//
// The returned error names the step that failed.
func HardenProcess() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("secmem: prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("secmem: setrlimit(RLIMIT_CORE, 0): %w", err)
	}
	var got unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &got); err != nil {
		return fmt.Errorf("secmem: getrlimit(RLIMIT_CORE): %w", err)
	}
	if got.Cur != 0 || got.Max != 0 {
		return errors.New("secmem: setrlimit(RLIMIT_CORE, 0) did not take effect")
	}
	return nil
}
