package sealstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/adrg/xdg"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/safefile"
)

// maxNameLen is the maximum length of an identity name.
const maxNameLen = 64

// File name suffixes in a store.
const (
	sealedExt = ".sealed"
	pubExt    = ".pub"
	tmpExt    = ".tmp"
	// bakExt follows NAME.sealed in the name of the backup a reseal keeps
	// while it replaces NAME.sealed: NAME.sealed.bak, which List and the
	// Watcher ignore.
	bakExt = ".bak"
)

var (
	// ErrResealPending is wrapped by the error ReplaceChecked returns when
	// NAME.sealed.bak exists: another reseal of the identity is running,
	// or one was interrupted and left it.
	ErrResealPending = errors.New("sealstore: a reseal of this identity is running or was interrupted")
	// ErrBadName is wrapped by errors about an unusable identity name.
	ErrBadName = errors.New("sealstore: bad identity name")
	// ErrExists is wrapped by the error Store.Create returns when the
	// identity already exists.
	ErrExists = errors.New("sealstore: identity already exists")
	// ErrNotFound is wrapped by errors about an identity that does not
	// exist in the store.
	ErrNotFound = errors.New("sealstore: identity not found")
)

// nameRule says what ValidName accepts, for error messages.
const nameRule = `names are 1 to 64 characters from A-Z a-z 0-9 . _ -, start with a letter or digit, contain no ".." and do not end in ".tmp"`

// ValidName reports whether name is usable as an identity name: 1 to 64
// characters from [A-Za-z0-9._-], the first a letter or digit, without ".."
// and not ending in ".tmp". Such a name is a safe file name component that
// cannot be confused with a temporary or hidden file. It returns nil or an
// error wrapping ErrBadName that says what is allowed.
func ValidName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s (%s)", ErrBadName, truncate(name, maxNameLen), why, nameRule)
	}
	if name == "" {
		return fmt.Errorf("%w: empty name (%s)", ErrBadName, nameRule)
	}
	if len(name) > maxNameLen {
		return bad(fmt.Sprintf("%d bytes long", len(name)))
	}
	for _, c := range []byte(name) {
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return bad("contains a character that is not allowed")
		}
	}
	if !isAlnum(name[0]) {
		return bad("does not start with a letter or digit")
	}
	if strings.Contains(name, "..") {
		return bad(`contains ".."`)
	}
	if strings.HasSuffix(name, tmpExt) {
		return bad(`ends in ".tmp"`)
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// DefaultDir returns the default store directory,
// $XDG_DATA_HOME/icn-agent/identities (by default
// ~/.local/share/icn-agent/identities), with XDG_DATA_HOME as resolved by
// github.com/adrg/xdg.
func DefaultDir() string {
	return filepath.Join(xdg.DataHome, "icn-agent", "identities")
}

// Store is a directory of sealed identities. For each identity NAME it holds
// NAME.sealed, the blob file, and NAME.pub, the public key in
// authorized_keys format. All writes go through a temporary file in the
// same directory that is synced and renamed into place, so readers and
// crashes never see a partial file. A Store holds no open files; its methods
// may be called concurrently, and several processes may use the same
// directory.
type Store struct {
	dir string
}

// Open returns the store in directory dir, creating it and its parents
// with mode 0700 if missing. If dir exists with group or other permission
// bits, they are removed (mode 0700). It is an error if dir is not a
// directory or is not owned by the current user.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("sealstore: empty store directory path")
	}
	// Absolute, so that the store survives a change of working directory.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("sealstore: store directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sealstore: create store directory: %w", err)
	}
	if _, err := checkDir(dir); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

// checkDir checks that dir is a directory owned by the current user and
// removes any group and other permission bits. It reports the mode it
// found when it had to restrict it, else 0.
func checkDir(dir string) (restricted fs.FileMode, err error) {
	d, err := openDir(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return 0, fmt.Errorf("sealstore: stat store directory %s: %w", dir, err)
	}
	if uid := os.Getuid(); int(st.Uid) != uid {
		return 0, fmt.Errorf("sealstore: store directory %s is owned by uid %d, not by the current user (uid %d)", dir, st.Uid, uid)
	}
	if st.Mode&0o077 == 0 {
		return 0, nil
	}
	if err := unix.Fchmod(int(d.Fd()), 0o700); err != nil {
		return 0, fmt.Errorf("sealstore: restrict store directory %s to mode 0700: %w", dir, err)
	}
	return fs.FileMode(st.Mode & 0o777), nil
}

// openDir opens dir as a directory (failing on anything else) for use as a
// dirfd and for fsync.
func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("sealstore: store directory %s is not a directory", dir)
		}
		return nil, fmt.Errorf("sealstore: open store directory %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// Dir returns the store's directory, as an absolute path.
func (s *Store) Dir() string {
	return s.dir
}

// Path returns the path of the blob file of identity name, dir/NAME.sealed.
// It does not check name; see ValidName.
func (s *Store) Path(name string) string {
	return filepath.Join(s.dir, name+sealedExt)
}

// Create adds identity b.Name to the store: it writes NAME.sealed from
// b.Marshal, then NAME.pub from b.AuthorizedKey.
//
// Each file is written to a temporary file in the store directory (mode
// 0600), synced and renamed into place, and the directory is synced. The
// rename of NAME.sealed, done so that it fails if NAME.sealed exists, is
// the commit point: if NAME.sealed already exists Create returns an error
// wrapping ErrExists and changes nothing, and on any failure up to the
// commit nothing is left behind. NAME.pub is derived data: an existing one
// is replaced. A failure after the commit (syncing the directory, writing
// NAME.pub) is returned as an error naming the step, but the identity
// exists and Load works.
func (s *Store) Create(b *Blob) error {
	return s.write(b, false)
}

// Replace atomically replaces the existing identity b.Name with b, for
// explicit operations such as resealing to new PCR values. It writes like
// Create but renames over the old NAME.sealed, and returns an error wrapping
// ErrNotFound if there is none.
func (s *Store) Replace(b *Blob) error {
	return s.write(b, true)
}

// BackupPath returns the path of the backup of identity name's blob that
// ReplaceChecked keeps while it replaces it, dir/NAME.sealed.bak.
func (s *Store) BackupPath(name string) string {
	return s.Path(name) + bakExt
}

// ReplaceChecked replaces the existing identity b.Name with b, as Replace
// does, but only once check accepts the new blob as read back from the
// disk, for resealing. In order:
//
//  1. The current NAME.sealed is linked to NAME.sealed.bak, the backup. If
//     that exists already (another reseal is running, or one was
//     interrupted) nothing is done and the error wraps ErrResealPending.
//  2. b is written to a temporary file in the store and synced; check is
//     called with the blob parsed back from that file. If writing, reading
//     or check fails, the temporary file and the backup are removed and
//     NAME.sealed was never touched.
//  3. The temporary file is renamed over NAME.sealed (the commit point)
//     and the directory is synced.
//  4. The backup is removed: the old blob, bound to a policy the identity
//     no longer has (perhaps a weaker one), must not outlive the reseal
//     that replaced it. NAME.pub is rewritten.
//
// A NAME.sealed.bak found after a crash is the blob as it was before the
// interrupted reseal; NAME.sealed is then either the same blob or the new,
// checked one.
func (s *Store) ReplaceChecked(b *Blob, check func(*Blob) error) error {
	if b == nil {
		return fmt.Errorf("%w: nil blob", ErrMalformedBlob)
	}
	if err := ValidName(b.Name); err != nil {
		return err
	}
	sealed, err := b.Marshal()
	if err != nil {
		return err
	}
	d, err := openDir(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	dirfd := int(d.Fd())
	sealedName := b.Name + sealedExt
	bakName := sealedName + bakExt
	path := filepath.Join(s.dir, sealedName)
	bakPath := filepath.Join(s.dir, bakName)

	if err := unix.Linkat(dirfd, sealedName, dirfd, bakName, 0); err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return &pathError{path, ErrNotFound}
		case errors.Is(err, unix.EEXIST):
			return fmt.Errorf("%w: %s exists", ErrResealPending, bakPath)
		}
		return fmt.Errorf("sealstore: back up %s: %w", path, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = unix.Unlinkat(dirfd, bakName, 0)
			_ = d.Sync()
		}
	}()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sealstore: sync store directory after backing up %s: %w", path, err)
	}

	tmp, err := writeTemp(s.dir, sealedName, sealed)
	if err != nil {
		return err
	}
	staged, err := loadFile(filepath.Join(s.dir, tmp), b.Name)
	if err == nil {
		err = check(staged)
	}
	if err != nil {
		_ = unix.Unlinkat(dirfd, tmp, 0)
		return err
	}
	if err := renameOver(dirfd, tmp, sealedName); err != nil {
		_ = unix.Unlinkat(dirfd, tmp, 0)
		return fmt.Errorf("sealstore: commit %s: %w", path, err)
	}
	committed = true
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sealstore: sync store directory after writing %s (the old blob is kept as %s): %w", path, bakPath, err)
	}
	if err := unix.Unlinkat(dirfd, bakName, 0); err != nil {
		return fmt.Errorf("sealstore: %s was replaced, but its backup %s could not be removed: %w", path, bakPath, err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sealstore: sync store directory after removing %s: %w", bakPath, err)
	}
	pubName := b.Name + pubExt
	if err := writePub(d, s.dir, pubName, b.AuthorizedKey()); err != nil {
		return fmt.Errorf("sealstore: %s was written, but %s could not be: %w", path, pubName, err)
	}
	return nil
}

// renameat2 is unix.Renameat2, replaceable in tests.
var renameat2 = unix.Renameat2

func (s *Store) write(b *Blob, replace bool) error {
	if b == nil {
		return fmt.Errorf("%w: nil blob", ErrMalformedBlob)
	}
	if err := ValidName(b.Name); err != nil {
		return err
	}
	sealed, err := b.Marshal()
	if err != nil {
		return err
	}
	pub := b.AuthorizedKey()

	d, err := openDir(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	dirfd := int(d.Fd())
	sealedName := b.Name + sealedExt
	path := filepath.Join(s.dir, sealedName)

	// Fail early, without writing anything, in the common cases; the
	// rename below is what guarantees the outcome.
	var st unix.Stat_t
	switch err := unix.Fstatat(dirfd, sealedName, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && !replace:
		return &pathError{path, ErrExists}
	case errors.Is(err, unix.ENOENT) && replace:
		return &pathError{path, ErrNotFound}
	case err != nil && !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("sealstore: stat %s: %w", path, err)
	}

	tmp, err := writeTemp(s.dir, sealedName, sealed)
	if err != nil {
		return err
	}
	if replace {
		err = renameOver(dirfd, tmp, sealedName)
	} else {
		err = renameNoReplace(dirfd, tmp, sealedName)
	}
	if err != nil {
		_ = unix.Unlinkat(dirfd, tmp, 0)
		if errors.Is(err, ErrExists) {
			return &pathError{path, ErrExists}
		}
		return fmt.Errorf("sealstore: commit %s: %w", path, err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sealstore: sync store directory after writing %s: %w", path, err)
	}

	pubName := b.Name + pubExt
	if err := writePub(d, s.dir, pubName, pub); err != nil {
		return fmt.Errorf("sealstore: %s was written, but %s could not be: %w", path, pubName, err)
	}
	return nil
}

// writePub writes the derived .pub file, replacing any existing one.
func writePub(d *os.File, dir, name string, data []byte) error {
	tmp, err := writeTemp(dir, name, data)
	if err != nil {
		return err
	}
	if err := renameOver(int(d.Fd()), tmp, name); err != nil {
		_ = unix.Unlinkat(int(d.Fd()), tmp, 0)
		return err
	}
	return d.Sync()
}

// writeTemp writes data to a new hidden temporary file ".TARGET.*.tmp" in
// dir, mode 0600, and syncs it. It returns the file's base name. On error
// the file is removed.
func writeTemp(dir, target string, data []byte) (name string, err error) {
	f, err := os.CreateTemp(dir, "."+target+".*"+tmpExt)
	if err != nil {
		return "", fmt.Errorf("sealstore: create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("sealstore: write temporary file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sealstore: sync temporary file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("sealstore: close temporary file: %w", err)
	}
	return filepath.Base(f.Name()), nil
}

// renameNoReplace renames old to new in dirfd, failing with ErrExists if
// new exists. Where renameat2(RENAME_NOREPLACE) is unavailable it links new
// to old (which also fails if new exists) and removes old.
func renameNoReplace(dirfd int, old, new string) error {
	err := renameat2(dirfd, old, dirfd, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if err = unix.Linkat(dirfd, old, dirfd, new, 0); err == nil {
			// Committed; a leftover temporary name is harmless.
			_ = unix.Unlinkat(dirfd, old, 0)
			return nil
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return ErrExists
	}
	return err
}

// renameOver renames old to new in dirfd, replacing new.
func renameOver(dirfd int, old, new string) error {
	return unix.Renameat(dirfd, old, dirfd, new)
}

// Load reads and parses the blob of identity name. It returns an error
// wrapping ErrNotFound if there is none, and errors from ParseBlob, or about
// a blob whose inner name is not name, prefixed with the file's path.
func (s *Store) Load(name string) (*Blob, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	return loadFile(s.Path(name), name)
}

// Entry is one identity file in the store as found by List.
type Entry struct {
	// Name is the identity name, from the file name.
	Name string
	// Path is the path of the NAME.sealed file.
	Path string
	// Blob is the parsed blob, nil if Err is set.
	Blob *Blob
	// Err is set if the file is unreadable or corrupt.
	Err error
}

// List returns every identity in the store, sorted by name. Files whose name
// is not NAME.sealed with a valid NAME are ignored, as are hidden and
// temporary files. A NAME.sealed that cannot be read or parsed, or whose
// blob has another name, is listed with Err set; it does not stop the
// listing.
func (s *Store) List() ([]Entry, error) {
	return s.list(nil)
}

// list is List that also calls read, if set, with the bytes it read of
// each entry's file, or why it could not read them.
func (s *Store) list(read func(name string, data []byte, err error)) ([]Entry, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("sealstore: list store: %w", err)
	}
	var entries []Entry
	for _, de := range des {
		name, ok := blobFileName(de.Name())
		if !ok {
			continue
		}
		path := filepath.Join(s.dir, de.Name())
		data, err := safefile.Read(path, maxFileSize)
		if read != nil {
			read(name, data, err)
		}
		b, err := parseFile(path, name, data, err)
		entries = append(entries, Entry{Name: name, Path: path, Blob: b, Err: err})
	}
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return entries, nil
}

// loadFile reads and parses the blob file at path, which must be the blob
// of identity name.
//
// It reads through safefile: a FIFO, a device or a link to one planted in
// the store is refused at once rather than hanging the agent or feeding it
// endless bytes, and the refusal names the file, so that one bad entry
// does not hide the others (List goes on). Links are followed: a user may
// keep a blob elsewhere and link it into the store. A link to nothing is
// reported as such, not as a missing identity: the name is there for
// anyone who lists the directory.
func loadFile(path, name string) (*Blob, error) {
	data, err := safefile.Read(path, maxFileSize)
	return parseFile(path, name, data, err)
}

// parseFile parses data, read from path with error err, as the blob of
// identity name.
func parseFile(path, name string, data []byte, err error) (*Blob, error) {
	if err != nil {
		return nil, fileError(path, err, ErrMalformedBlob, ErrNotFound)
	}
	b, err := ParseBlob(data)
	if err != nil {
		return nil, &pathError{path, err}
	}
	if b.Name != name {
		return nil, &pathError{path, malformed("name", "%q does not match the file name", b.Name)}
	}
	return b, nil
}

// fileError turns an error of safefile reading path into a sealstore
// error naming path once: a file over its cap also wraps malformed (it
// cannot be a valid file of its kind), a missing one notFound if that is
// set. A dangling link is not notFound: its message says where the link
// points.
func fileError(path string, err, malformed, notFound error) error {
	var se *safefile.Error
	switch {
	case errors.Is(err, safefile.ErrTooLarge) && errors.As(err, &se):
		return &pathError{path, fmt.Errorf("%w: %w", malformed, se.Err)}
	case errors.As(err, &se):
		return &pathError{path, se.Err}
	case notFound != nil && errors.Is(err, fs.ErrNotExist):
		return &pathError{path, notFound}
	}
	return fmt.Errorf("sealstore: %w", err)
}

// pathError prefixes an error with the path of the file it is about:
// "sealstore: PATH: message".
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string {
	return "sealstore: " + e.path + ": " + strings.TrimPrefix(e.err.Error(), "sealstore: ")
}

func (e *pathError) Unwrap() error { return e.err }
