// Package safefile is the one way icn-agent reads a file whose path a user,
// a config file or another program chose: blobs, certificates, public keys,
// the config, policy files, backups, evidence, PIN and passphrase files.
//
// A path can name anything: a FIFO that blocks the reader until a writer
// appears, a character device such as /dev/zero that never ends, a
// directory, a socket, a device whose mere opening does something
// (/dev/watchdog), or a symbolic link to any of them. [Open] takes a
// reference to the path's inode without opening it (O_PATH), checks it
// (fstat on the descriptor, so there is no window between the check and
// the read), refuses anything but a regular file, and only then opens it
// for reading; [Read] then reads at most a cap chosen per kind of file. Every refusal is an error that names the path and says why,
// testable with errors.Is against [ErrNotRegular], [ErrTooLarge],
// [ErrSymlink] and [ErrDanglingLink].
//
// Whether a symbolic link is followed is the caller's choice: files that
// users place or share (certificates, policy files, blobs kept elsewhere
// and linked into the store) are followed, files that icn-agent writes
// itself and never links are opened with [Options.NoFollow].
//
// [ReadInto] reads a secret (a passphrase file) into a buffer the caller
// provides and later wipes, so that no grown or intermediate buffer keeps
// a copy the caller cannot reach.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Errors, wrapped with the path.
var (
	// ErrNotRegular means the path names a FIFO, device, socket or
	// directory.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge means the file holds more than the cap for its kind.
	ErrTooLarge = errors.New("file too large")
	// ErrSymlink means the path is a symbolic link where none is expected
	// (see [Options.NoFollow]).
	ErrSymlink = errors.New("is a symbolic link")
	// ErrDanglingLink means the path is a symbolic link to nothing. Errors
	// wrapping it also wrap [fs.ErrNotExist]: the file is missing, but the
	// message says where to look.
	ErrDanglingLink = errors.New("is a dangling symbolic link")
)

// Error is the error of a refused or failed read: Path and why. Callers
// that add the path themselves take Err (errors.As) to avoid saying it
// twice. Errors of the open itself (missing file, permission) are the
// [*fs.PathError] of package os.
type Error struct {
	Path string
	Err  error
}

func (e *Error) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Options tune [ReadWith].
type Options struct {
	// NoFollow refuses a path whose last element is a symbolic link
	// (O_NOFOLLOW), for files that icn-agent itself writes and never
	// links.
	NoFollow bool
}

// Read returns the contents of the regular file at path, at most max bytes.
// It follows symbolic links.
func Read(path string, max int64) ([]byte, error) {
	return ReadWith(path, max, Options{})
}

// ReadWith is [Read] with options.
func ReadWith(path string, max int64, opts Options) ([]byte, error) {
	f, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAll(f, path, max)
}

// procSelfFD is where Open reopens a descriptor; tests point it elsewhere
// to take the path of a system without /proc.
var procSelfFD = "/proc/self/fd/"

// Open opens path for reading if it is a regular file, without following
// a final symbolic link under opts.NoFollow. The caller reads at most what
// it is prepared to hold: see [ReadAll].
//
// Opening a device is not harmless even when nothing is read: opening
// /dev/watchdog arms the watchdog, a tape device may rewind, a terminal
// may become the process's controlling terminal, a FIFO without writer
// blocks. So Open first opens path with O_PATH, which opens nothing but a
// reference to the inode, checks that inode with fstat, and only then
// opens that very inode for reading, through /proc/self/fd (O_NONBLOCK
// and O_NOCTTY as well, for good measure). Where /proc is not mounted it
// opens path again and checks that it found the same inode, which leaves
// a race with someone swapping the file in between, and nothing more.
func Open(path string, opts Options) (*os.File, error) {
	flags := unix.O_PATH | unix.O_CLOEXEC
	if opts.NoFollow {
		flags |= unix.O_NOFOLLOW
	}
	ref, err := unix.Open(path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			// "No such file" for a name that ls shows is a puzzle: say
			// that it is a link and where it points. (The link may have
			// appeared since the open failed; the error is about what is
			// there now, which is what the user will look at.)
			if target, lerr := os.Readlink(path); lerr == nil {
				return nil, &Error{path, fmt.Errorf("%w to %s: %w", ErrDanglingLink, target, fs.ErrNotExist)}
			}
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(ref)
	var st unix.Stat_t
	if err := unix.Fstat(ref, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		// O_PATH|O_NOFOLLOW opens the link itself rather than failing.
		return nil, &Error{path, ErrSymlink}
	default:
		return nil, &Error{path, fmt.Errorf("%w (%s)", ErrNotRegular, describe(st.Mode))}
	}

	const readFlags = unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	fd, err := unix.Open(procSelfFD+strconv.Itoa(ref), readFlags, 0)
	if errors.Is(err, unix.ENOENT) {
		// No /proc: open the path again; the inode check below tells
		// whether it is still the file that was checked.
		fd, err = unix.Open(path, readFlags|flags&unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	var again unix.Stat_t
	if err := unix.Fstat(fd, &again); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if again.Dev != st.Dev || again.Ino != st.Ino {
		f.Close()
		return nil, &Error{path, errors.New("replaced while it was opened")}
	}
	return f, nil
}

// ReadAll reads all of f, opened with [Open] from path, refusing more than
// max bytes.
func ReadAll(f *os.File, path string, max int64) ([]byte, error) {
	return readAll(f, path, max)
}

func readAll(f *os.File, path string, max int64) ([]byte, error) {
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		return nil, &Error{path, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, fi.Size(), max)}
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err // an *fs.PathError naming path
	}
	if int64(len(data)) > max {
		return nil, &Error{path, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)}
	}
	return data, nil
}

// ReadInto reads the whole regular file at path into buf and returns the
// number of bytes read, for secrets such as passphrase files: the bytes go
// from the kernel straight into buf, which the caller owns and wipes (a
// [secmem.Buffer], say), and no other buffer ever holds them. A file that
// does not fit in buf is refused with [ErrTooLarge]; on every error buf
// is left zeroed.
//
// [secmem.Buffer]: github.com/icn/icn-agent/internal/secmem
func ReadInto(path string, buf []byte, opts Options) (n int, err error) {
	f, err := Open(path, opts)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	defer func() {
		if err != nil {
			clear(buf)
			n = 0
		}
	}()
	max := int64(len(buf))
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		return 0, &Error{path, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, fi.Size(), max)}
	}
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err // an *fs.PathError naming path
		}
	}
	// buf is full: the file fits only if nothing follows.
	var probe [1]byte
	m, _ := f.Read(probe[:])
	clear(probe[:])
	if m > 0 {
		return n, &Error{path, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)}
	}
	return n, nil
}

// describe names a file type, from the S_IFMT bits of a stat mode, for
// an error message.
func describe(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}
