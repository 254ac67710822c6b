// Package safefile is the one way icn-agent reads a file whose path a user,
// a config file or another program chose: blobs, certificates, public keys,
// the config, policy files, backups, evidence, PIN and passphrase files.
//
// A path can name anything: a FIFO that blocks the reader until a writer
// appears, a character device such as /dev/zero that never ends, a
// directory, a socket, or a symbolic link to any of them. [Read] opens the
// path without blocking (O_NONBLOCK), checks what it opened (fstat on the
// descriptor, so there is no window between the check and the read),
// refuses anything but a regular file, and reads at most a cap chosen per
// kind of file. Every refusal is an error that names the path and says why,
// testable with errors.Is against [ErrNotRegular], [ErrTooLarge] and
// [ErrSymlink].
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
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
)

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

// Open opens path for reading if it is a regular file, without blocking on
// a FIFO and without following a final symbolic link under opts.NoFollow.
// The caller reads at most what it is prepared to hold: see [ReadAll].
func Open(path string, opts Options) (*os.File, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	if opts.NoFollow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if opts.NoFollow && errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: %w", path, ErrSymlink)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, describe(fi.Mode()))
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
		return nil, fmt.Errorf("%s: %w: %d bytes, at most %d", path, ErrTooLarge, fi.Size(), max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: %w: more than %d bytes", path, ErrTooLarge, max)
	}
	return data, nil
}

// describe names a file type for an error message.
func describe(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeDir != 0:
		return "a directory"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	default:
		return m.Type().String()
	}
}
