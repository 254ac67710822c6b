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
		{"link followed", link, 5, Options{}, nil},
		{"link refused", link, 5, Options{NoFollow: true}, ErrSymlink},
		{"dangling link", dangling, 5, Options{}, os.ErrNotExist},
		{"missing", filepath.Join(dir, "missing"), 5, Options{}, os.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
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
