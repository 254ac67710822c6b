package recovery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"filippo.io/age/armor"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/safefile"
)

// ErrFileExists is wrapped by the error WriteNewFile returns when the file
// already exists.
var ErrFileExists = errors.New("recovery: file already exists")

// WriteNewFile writes data to a new file at path, mode 0600. It never
// replaces anything: if path exists (even as a dangling symlink), it returns
// an error wrapping ErrFileExists and changes nothing.
//
// The data goes to a temporary file in the same directory, which is synced
// and then hard-linked to path (link fails if path exists), so that path
// appears whole or not at all; the directory is synced after. On file
// systems without hard links, renameat2(RENAME_NOREPLACE) gives the same
// guarantee. The temporary file is always removed.
func WriteNewFile(path string, data []byte) error { return WriteNewFilePerm(path, data, 0o600) }

// WriteNewFilePerm is WriteNewFile with the file's permission bits perm,
// for files that are not secret (a public key, evidence).
func WriteNewFilePerm(path string, data []byte, perm os.FileMode) error {
	if path == "" {
		return errors.New("recovery: empty file name")
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s", ErrFileExists, path)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".icn-agent-*.tmp")
	if err != nil {
		return fmt.Errorf("recovery: create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("recovery: write %s: %w", path, err)
	}
	if err := writeSync(f, data); err != nil {
		return fmt.Errorf("recovery: write %s: %w", path, err)
	}
	err = os.Link(tmp, path)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		// No hard links here (EPERM, ENOTSUP, ...): an atomic rename that
		// refuses to replace does the same.
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = fs.ErrExist
		}
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrFileExists, path)
	}
	if err != nil {
		return fmt.Errorf("recovery: write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("recovery: %s was written, but syncing its directory failed: %w", path, err)
		}
	}
	return nil
}

func writeSync(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ageMagic opens every binary age file.
const ageMagic = "age-encryption.org/v1\n"

// IsAgeEncrypted reports whether data is an age file: binary (starting with
// "age-encryption.org/v1") or ASCII-armored ("-----BEGIN AGE ENCRYPTED
// FILE-----", possibly after whitespace).
func IsAgeEncrypted(data []byte) bool {
	return bytes.HasPrefix(data, []byte(ageMagic)) ||
		bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(armor.Header))
}

// ageReader returns a reader of the binary age file in data, removing the
// armor if there is one.
func ageReader(data []byte) (io.Reader, error) {
	switch {
	case bytes.HasPrefix(data, []byte(ageMagic)):
		return bytes.NewReader(data), nil
	case bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(armor.Header)):
		return armor.NewReader(bytes.NewReader(data)), nil
	}
	return nil, ErrNotAge
}

// ErrNotAge means a file is not age-encrypted.
var ErrNotAge = errors.New("recovery: not an age-encrypted file")

// ReadFileLimited reads the whole file at path, at most max bytes, through
// safefile: a FIFO does not hang a command, a device or directory is
// refused, and symbolic links are followed (backups, migration files and
// recipient lists are the user's files, kept where the user likes). Its
// errors name the path and wrap safefile's sentinels or fs.ErrNotExist.
func ReadFileLimited(path string, max int64) ([]byte, error) {
	return safefile.Read(path, max)
}
