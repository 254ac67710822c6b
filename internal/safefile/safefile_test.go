package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(regular, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		max  int64
		opts Options
		want error // nil: reads "hello"
	}{
		{"regular", regular, 5, Options{}, nil},
		{"over the cap", regular, 4, Options{}, ErrTooLarge},
		{"fifo", fifo, 5, Options{}, ErrNotRegular},
		{"directory", dir, 5, Options{}, ErrNotRegular},
		{"char device", "/dev/zero", 5, Options{}, ErrNotRegular},
		// Opening /dev/tty without a controlling terminal fails (ENXIO),
		// and with one could change the process's terminal state: it is
		// refused from its inode, never opened.
		{"terminal", "/dev/tty", 5, Options{}, ErrNotRegular},
		{"link followed", link, 5, Options{}, nil},
		{"link refused", link, 5, Options{NoFollow: true}, ErrSymlink},
		{"dangling link", dangling, 5, Options{}, os.ErrNotExist},
		{"dangling link named", dangling, 5, Options{}, ErrDanglingLink},
		{"dangling link refused", dangling, 5, Options{NoFollow: true}, ErrSymlink},
		{"missing", filepath.Join(dir, "missing"), 5, Options{}, os.ErrNotExist},
	}
	// Without /proc, Open reopens the path and checks the inode: the
	// results are the same.
	for _, proc := range []string{procSelfFD, filepath.Join(dir, "no-proc") + "/"} {
		for _, tc := range tests {
			t.Run(tc.name+" "+proc, func(t *testing.T) {
				defer func(old string) { procSelfFD = old }(procSelfFD)
				procSelfFD = proc
				got, err := ReadWith(tc.path, tc.max, tc.opts)
				if tc.want == nil {
					if err != nil || string(got) != "hello" {
						t.Fatalf("got %q, %v", got, err)
					}
					return
				}
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
			})
		}
	}
}

func TestReadInto(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pass")
	if err := os.WriteFile(file, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("fits", func(t *testing.T) {
		buf := make([]byte, 16)
		n, err := ReadInto(file, buf, Options{})
		if err != nil || string(buf[:n]) != "secret\n" {
			t.Fatalf("got %q, %v", buf[:n], err)
		}
	})
	t.Run("exact fit", func(t *testing.T) {
		buf := make([]byte, 7)
		n, err := ReadInto(file, buf, Options{})
		if err != nil || n != 7 {
			t.Fatalf("got %d, %v", n, err)
		}
	})
	// A file larger than the buffer is refused and leaves it zeroed.
	t.Run("too large", func(t *testing.T) {
		buf := make([]byte, 6)
		n, err := ReadInto(file, buf, Options{})
		if !errors.Is(err, ErrTooLarge) || n != 0 {
			t.Fatalf("got %d, %v; want ErrTooLarge", n, err)
		}
		for _, c := range buf {
			if c != 0 {
				t.Fatalf("buffer not wiped: %q", buf)
			}
		}
	})
	t.Run("fifo", func(t *testing.T) {
		_, err := ReadInto(fifo, make([]byte, 16), Options{})
		if !errors.Is(err, ErrNotRegular) {
			t.Fatalf("error %v, want ErrNotRegular", err)
		}
	})
}

func TestErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink("/nowhere/at/all", dangling); err != nil {
		t.Fatal(err)
	}
	_, err := Read(dangling, 10)
	want := dangling + ": is a dangling symbolic link to /nowhere/at/all: file does not exist"
	if err == nil || err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	_, err = Read("/dev/zero", 10)
	if want := "/dev/zero: not a regular file (a character device)"; err == nil || err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}
