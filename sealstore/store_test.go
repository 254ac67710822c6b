package sealstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/adrg/xdg"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/safefile"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"good", true},
		{"a", true},
		{"9", true},
		{"work-laptop_2.key", true},
		{"A.b-C_d", true},
		{"x.tmpl", true},
		{"x.tmp.pub", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{"../x", false},
		{"..", false},
		{"a/b", false},
		{"/abs", false},
		{".hidden", false},
		{"-flag", false},
		{"_under", false},
		{"x.tmp", false},
		{"x.sealed.tmp", false},
		{strings.Repeat("a", 65), false},
		{"clé", false},
		{"ключ", false},
		{"a..b", false},
		{"a b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a:b", false},
		{"a\\b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.name)
			if tt.ok {
				if err != nil {
					t.Errorf("ValidName(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("ValidName(%q) = %v, want ErrBadName", tt.name, err)
			}
			if !strings.Contains(err.Error(), "names are 1 to 64 characters from A-Z a-z 0-9 . _ -") {
				t.Errorf("error %q does not say what is allowed", err)
			}
		})
	}
}

func TestDefaultDir(t *testing.T) {
	want := filepath.Join(xdg.DataHome, "icn-agent", "identities")
	if got := DefaultDir(); got != want {
		t.Errorf("DefaultDir() = %q, want %q", got, want)
	}
}

// openTestStore returns a store in a fresh temporary directory.
func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "identities"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// dirNames returns the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestOpen(t *testing.T) {
	t.Run("creates with parents", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b", "identities")
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if s.Dir() != dir {
			t.Errorf("Dir() = %q, want %q", s.Dir(), dir)
		}
		if m := mode(t, dir); m != os.ModeDir|0o700 {
			t.Errorf("mode %v, want drwx------", m)
		}
		if got, want := s.Path("x"), filepath.Join(dir, "x.sealed"); got != want {
			t.Errorf("Path(x) = %q, want %q", got, want)
		}
	})
	t.Run("fixes permissions", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir); err != nil {
			t.Fatal(err)
		}
		if m := mode(t, dir); m != os.ModeDir|0o700 {
			t.Errorf("mode %v, want drwx------", m)
		}
	})
	t.Run("relative path made absolute", func(t *testing.T) {
		t.Chdir(t.TempDir())
		s, err := Open("rel")
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsAbs(s.Dir()) {
			t.Errorf("Dir() = %q, not absolute", s.Dir())
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(file); err == nil {
			t.Error("Open of a regular file succeeded")
		}
	})
	t.Run("empty path", func(t *testing.T) {
		if _, err := Open(""); err == nil {
			t.Error("Open(\"\") succeeded")
		}
	})
	t.Run("other owner", func(t *testing.T) {
		if os.Getuid() != 0 {
			t.Skip("needs root to give a directory away")
		}
		dir := t.TempDir()
		if err := os.Chown(dir, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir)
		if err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
			t.Errorf("Open = %v, want an ownership error", err)
		}
	})
}

func TestCreateLoad(t *testing.T) {
	s := openTestStore(t)
	b := testBlob(t, "work")
	if err := s.Create(b); err != nil {
		t.Fatal(err)
	}
	if got, want := dirNames(t, s.Dir()), []string{"work.pub", "work.sealed"}; !slices.Equal(got, want) {
		t.Errorf("store holds %q, want %q", got, want)
	}
	for _, f := range []string{"work.sealed", "work.pub"} {
		if m := mode(t, filepath.Join(s.Dir(), f)); m != 0o600 {
			t.Errorf("%s mode %v, want -rw-------", f, m)
		}
	}
	if m := mode(t, s.Dir()); m != os.ModeDir|0o700 {
		t.Errorf("dir mode %v, want drwx------", m)
	}
	sealed, err := os.ReadFile(s.Path("work"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sealed, mustMarshal(t, b)) {
		t.Error("work.sealed is not b.Marshal()")
	}
	pub, err := os.ReadFile(filepath.Join(s.Dir(), "work.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, b.AuthorizedKey()) {
		t.Errorf("work.pub = %q, want %q", pub, b.AuthorizedKey())
	}
	got, err := s.Load("work")
	if err != nil {
		t.Fatal(err)
	}
	if !blobsEqual(got, b) {
		t.Error("Load returned a different blob")
	}
}

func TestCreateExists(t *testing.T) {
	s := openTestStore(t)
	if err := s.Create(testBlob(t, "dup")); err != nil {
		t.Fatal(err)
	}
	sealed, _ := os.ReadFile(s.Path("dup"))
	pub, _ := os.ReadFile(filepath.Join(s.Dir(), "dup.pub"))

	other := testBlob(t, "dup")
	other.Comment = "another key"
	err := s.Create(other)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), s.Path("dup")) {
		t.Errorf("error %q does not name the file", err)
	}
	if got, _ := os.ReadFile(s.Path("dup")); !bytes.Equal(got, sealed) {
		t.Error("dup.sealed changed")
	}
	if got, _ := os.ReadFile(filepath.Join(s.Dir(), "dup.pub")); !bytes.Equal(got, pub) {
		t.Error("dup.pub changed")
	}
	if got, want := dirNames(t, s.Dir()), []string{"dup.pub", "dup.sealed"}; !slices.Equal(got, want) {
		t.Errorf("store holds %q, want %q", got, want)
	}
}

func TestCreateReplacesOrphanPub(t *testing.T) {
	s := openTestStore(t)
	pubPath := filepath.Join(s.Dir(), "orphan.pub")
	if err := os.WriteFile(pubPath, []byte("stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := testBlob(t, "orphan")
	if err := s.Create(b); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(pubPath); !bytes.Equal(got, b.AuthorizedKey()) {
		t.Errorf("orphan.pub = %q, want %q", got, b.AuthorizedKey())
	}
	if m := mode(t, pubPath); m != 0o600 {
		t.Errorf("orphan.pub mode %v, want -rw-------", m)
	}
}

func TestCreateInvalid(t *testing.T) {
	s := openTestStore(t)
	tests := []struct {
		name   string
		blob   *Blob
		target error
	}{
		{"nil", nil, ErrMalformedBlob},
		{"bad name", func() *Blob { b := testBlob(t, "x"); b.Name = "../x"; return b }(), ErrBadName},
		{"bad blob", func() *Blob { b := testBlob(t, "x"); b.Private = nil; return b }(), ErrMalformedBlob},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Create(tt.blob); !errors.Is(err, tt.target) {
				t.Errorf("Create = %v, want %v", err, tt.target)
			}
			if err := s.Replace(tt.blob); !errors.Is(err, tt.target) {
				t.Errorf("Replace = %v, want %v", err, tt.target)
			}
			if names := dirNames(t, s.Dir()); len(names) != 0 {
				t.Errorf("store holds %q, want nothing", names)
			}
		})
	}
}

// TestCreateWithoutRenameat2 runs Create with renameat2 unsupported, as on
// old kernels or some file systems.
func TestCreateWithoutRenameat2(t *testing.T) {
	for _, errno := range []error{unix.ENOSYS, unix.EINVAL} {
		t.Run(errno.Error(), func(t *testing.T) {
			orig := renameat2
			t.Cleanup(func() { renameat2 = orig })
			renameat2 = func(int, string, int, string, uint) error { return errno }

			s := openTestStore(t)
			b := testBlob(t, "fallback")
			if err := s.Create(b); err != nil {
				t.Fatal(err)
			}
			if got, want := dirNames(t, s.Dir()), []string{"fallback.pub", "fallback.sealed"}; !slices.Equal(got, want) {
				t.Errorf("store holds %q, want %q", got, want)
			}
			if got, err := s.Load("fallback"); err != nil || !blobsEqual(got, b) {
				t.Errorf("Load = %v", err)
			}
		})
	}
}

func TestRenameNoReplace(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		name := "renameat2"
		if fallback {
			name = "link"
		}
		t.Run(name, func(t *testing.T) {
			if fallback {
				orig := renameat2
				t.Cleanup(func() { renameat2 = orig })
				renameat2 = func(int, string, int, string, uint) error { return unix.ENOSYS }
			}
			dir := t.TempDir()
			d, err := openDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			write := func(name, content string) {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write("new", "new")
			write("existing", "old")

			if err := renameNoReplace(int(d.Fd()), "new", "existing"); !errors.Is(err, ErrExists) {
				t.Errorf("rename onto existing = %v, want ErrExists", err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "existing")); string(got) != "old" {
				t.Errorf("existing = %q, want old", got)
			}
			if err := renameNoReplace(int(d.Fd()), "new", "free"); err != nil {
				t.Fatal(err)
			}
			if got, want := dirNames(t, dir), []string{"existing", "free"}; !slices.Equal(got, want) {
				t.Errorf("dir holds %q, want %q", got, want)
			}
		})
	}
}

func TestReplace(t *testing.T) {
	s := openTestStore(t)
	b := testBlob(t, "re")
	if err := s.Replace(b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Replace of a missing identity = %v, want ErrNotFound", err)
	}
	if names := dirNames(t, s.Dir()); len(names) != 0 {
		t.Errorf("store holds %q, want nothing", names)
	}
	if err := s.Create(b); err != nil {
		t.Fatal(err)
	}
	resealed := testBlobPCRs(t, "re", testPCRs(testRand("new pcrs"), 0, 2, 4, 7))
	resealed.Comment = "resealed"
	if err := s.Replace(resealed); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("re")
	if err != nil {
		t.Fatal(err)
	}
	if !blobsEqual(got, resealed) {
		t.Error("Load after Replace returned the old blob")
	}
	if pub, _ := os.ReadFile(filepath.Join(s.Dir(), "re.pub")); !bytes.Equal(pub, resealed.AuthorizedKey()) {
		t.Errorf("re.pub = %q, want %q", pub, resealed.AuthorizedKey())
	}
	if got, want := dirNames(t, s.Dir()), []string{"re.pub", "re.sealed"}; !slices.Equal(got, want) {
		t.Errorf("store holds %q, want %q", got, want)
	}
	if m := mode(t, s.Path("re")); m != 0o600 {
		t.Errorf("re.sealed mode %v, want -rw-------", m)
	}
}

func TestLoadErrors(t *testing.T) {
	s := openTestStore(t)
	if err := s.Create(testBlob(t, "a")); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(s.Path("a"))
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("renamed.sealed", a)
	write("corrupt.sealed", a[:len(a)/2])
	big, err := os.Create(filepath.Join(s.Dir(), "big.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: reading it whole would take a while.
	if err := big.Truncate(1 << 32); err != nil {
		t.Fatal(err)
	}
	big.Close()
	if err := os.Mkdir(filepath.Join(s.Dir(), "dir.sealed"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(s.Dir(), "fifo.sealed"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		target  error
		wantErr string
	}{
		{"missing", ErrNotFound, "sealstore: " + s.Path("missing") + ": identity not found"},
		{"../a", ErrBadName, "bad identity name"},
		{"renamed", ErrMalformedBlob, "sealstore: " + s.Path("renamed") + `: malformed blob: name: "a" does not match the file name`},
		{"corrupt", ErrMalformedBlob, "sealstore: " + s.Path("corrupt") + ": malformed blob: pem: "},
		{"big", ErrMalformedBlob, "file too large: 4294967296 bytes, at most 65536"},
		{"dir", nil, "not a regular file"},
		{"fifo", nil, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := s.Load(tt.name)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if b != nil {
				t.Error("Load returned a blob and an error")
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("error %v does not wrap %v", err, tt.target)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestList(t *testing.T) {
	s := openTestStore(t)
	if entries, err := s.List(); err != nil || len(entries) != 0 {
		t.Fatalf("List of an empty store = %v, %v", entries, err)
	}
	for _, name := range []string{"zeta", "alpha", "mid-1"} {
		if err := s.Create(testBlob(t, name)); err != nil {
			t.Fatal(err)
		}
	}
	alpha, _ := os.ReadFile(s.Path("alpha"))
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(s.Dir(), name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("broken.sealed", []byte("not a blob"))
	write("copy.sealed", alpha)                       // inner name differs
	write(".alpha.sealed.123456.tmp", alpha)          // temporary file
	write(".hidden.sealed", alpha)                    // dot file
	write("x.tmp.sealed", alpha)                      // invalid name
	write("a..b.sealed", alpha)                       // invalid name
	write("notes.txt", []byte("hello"))               // other extension
	write("alpha.sealed.bak", alpha)                  // other extension
	write("lonely.pub", []byte("ssh-ed25519 AAAA\n")) // .pub without .sealed
	if err := os.Mkdir(filepath.Join(s.Dir(), "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "dir.sealed"), 0o700); err != nil {
		t.Fatal(err)
	}

	entries, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		name string
		ok   bool
		err  string
	}
	want := []result{
		{"alpha", true, ""},
		{"broken", false, "malformed blob: pem: data before the PEM block"},
		{"copy", false, `name: "alpha" does not match the file name`},
		{"dir", false, "not a regular file"},
		{"mid-1", true, ""},
		{"zeta", true, ""},
	}
	if len(entries) != len(want) {
		t.Fatalf("List returned %d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i, e := range entries {
		w := want[i]
		if e.Name != w.name || e.Path != s.Path(w.name) {
			t.Errorf("entry %d: name %q path %q, want %q", i, e.Name, e.Path, w.name)
			continue
		}
		if w.ok {
			if e.Err != nil || e.Blob == nil || e.Blob.Name != w.name {
				t.Errorf("entry %s: blob %v err %v, want a blob", e.Name, e.Blob, e.Err)
			}
			continue
		}
		if e.Blob != nil || e.Err == nil || !strings.Contains(e.Err.Error(), w.err) {
			t.Errorf("entry %s: blob %v err %v, want error containing %q", e.Name, e.Blob, e.Err, w.err)
		}
		if !strings.Contains(e.Err.Error(), e.Path) {
			t.Errorf("entry %s: error %q does not name the file", e.Name, e.Err)
		}
	}
}

func TestListMissingDir(t *testing.T) {
	s := openTestStore(t)
	if err := os.Remove(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(); err == nil {
		t.Error("List of a removed directory succeeded")
	}
}

// TestListHostileFiles plants what a confused or hostile user can put in a
// store: a FIFO (a reader would block until a writer comes), a link to
// /dev/zero (endless), a link to nothing, and a blob kept elsewhere and
// linked in. Each bad entry is refused at once with an error that names it
// and says why, and the good identities still load.
func TestListHostileFiles(t *testing.T) {
	s := openTestStore(t)
	for _, name := range []string{"good", "zeta"} {
		if err := s.Create(testBlob(t, name)); err != nil {
			t.Fatal(err)
		}
	}
	elsewhere := filepath.Join(t.TempDir(), "linked.sealed")
	data, err := testBlob(t, "linked").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(elsewhere, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.sealed"), 0o600); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"zero.sealed":   "/dev/zero",
		"gone.sealed":   filepath.Join(dir, "moved-away.sealed"),
		"linked.sealed": elsewhere,
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}

	entries, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		target error  // nil: loads
		msg    string // in the error, after the path
	}{
		"fifo":   {safefile.ErrNotRegular, ": not a regular file (a FIFO)"},
		"gone":   {safefile.ErrDanglingLink, ": is a dangling symbolic link to " + filepath.Join(dir, "moved-away.sealed")},
		"good":   {},
		"linked": {},
		"zero":   {safefile.ErrNotRegular, ": not a regular file (a character device)"},
		"zeta":   {},
	}
	if len(entries) != len(want) {
		t.Fatalf("List returned %d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for _, e := range entries {
		w, ok := want[e.Name]
		switch {
		case !ok:
			t.Errorf("unexpected entry %s", e.Name)
		case w.target == nil:
			if e.Err != nil || e.Blob == nil || e.Blob.Name != e.Name {
				t.Errorf("%s: blob %v, error %v; want the blob", e.Name, e.Blob, e.Err)
			}
		case !errors.Is(e.Err, w.target):
			t.Errorf("%s: error %v, want %v", e.Name, e.Err, w.target)
		case !strings.Contains(e.Err.Error(), "sealstore: "+e.Path+w.msg):
			t.Errorf("%s: error %q, want it to contain %q", e.Name, e.Err, e.Path+w.msg)
		}
	}

	// A dangling link is not a missing identity: commands that say "no
	// such identity, see icn-agent list" would send the user in circles.
	_, err = s.Load("gone")
	if errors.Is(err, ErrNotFound) || !errors.Is(err, safefile.ErrDanglingLink) {
		t.Errorf("Load of a dangling link: %v, want ErrDanglingLink and not ErrNotFound", err)
	}
	if strings.Count(err.Error(), s.Path("gone")) != 1 {
		t.Errorf("error %q should name the file once", err)
	}
	if _, err := s.Load("missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load of a missing identity: %v, want ErrNotFound", err)
	}
}

// TestSignedPoliciesHostileFiles is TestListHostileFiles for the policies
// directory: a FIFO or a link to a device is refused by name, and the
// valid policy beside it still loads.
func TestSignedPoliciesHostileFiles(t *testing.T) {
	s := openTestStore(t)
	if _, err := s.AddSignedPolicy(testSignedPolicy(t, "a", 0, 7)); err != nil {
		t.Fatal(err)
	}
	dir := s.PolicyDir()
	fifo := filepath.Join(dir, "fifo.policy")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.policy")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	entries, err := s.SignedPolicies()
	if err != nil {
		t.Fatal(err)
	}
	var valid int
	for _, e := range entries {
		switch e.Path {
		case fifo, zero:
			if !errors.Is(e.Err, safefile.ErrNotRegular) || !strings.Contains(e.Err.Error(), "sealstore: "+e.Path+": not a regular file") {
				t.Errorf("%s: error %v, want ErrNotRegular naming the file", e.Path, e.Err)
			}
		default:
			if e.Err != nil {
				t.Errorf("%s: %v", e.Path, e.Err)
			}
			valid++
		}
	}
	if len(entries) != 3 || valid != 1 {
		t.Errorf("got %d entries, %d valid; want 3 and 1: %+v", len(entries), valid, entries)
	}
	if _, err := LoadSignedPolicy(fifo); !errors.Is(err, safefile.ErrNotRegular) {
		t.Errorf("LoadSignedPolicy of a FIFO: %v, want ErrNotRegular", err)
	}
}
