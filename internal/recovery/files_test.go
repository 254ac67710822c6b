package recovery

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/icn/icn-agent/internal/safefile"
)

// TestReadHostileFiles gives every reader of a user-named file what a
// wrong path can name: a FIFO (a plain open blocks until a writer comes),
// a link to /dev/zero (endless), a directory, a file over the cap and a
// link to nothing. Each is refused at once, with an error that names the
// path and wraps the reason.
func TestReadHostileFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "moved"), dangling); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	// Over every cap (the largest is maxKeysFile); sparse, so cheap.
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, maxKeysFile+1); err != nil {
		t.Fatal(err)
	}
	readers := map[string]func(path string) error{
		"ReadBackupFile":    func(p string) error { _, err := ReadBackupFile(p, &Keys{}); return err },
		"ReadMigrationFile": func(p string) error { _, err := ReadMigrationFile(p); return err },
		"ReadSRKFile":       func(p string) error { _, err := ReadSRKFile(p); return err },
		"ParseRecipients":   func(p string) error { _, err := ParseRecipients(p); return err },
	}
	files := []struct {
		path string
		want error
	}{
		{fifo, safefile.ErrNotRegular},
		{zero, safefile.ErrNotRegular},
		{dir, safefile.ErrNotRegular},
		{big, safefile.ErrTooLarge},
		{dangling, safefile.ErrDanglingLink},
	}
	for name, read := range readers {
		for _, f := range files {
			t.Run(name+"/"+filepath.Base(f.path), func(t *testing.T) {
				err := read(f.path)
				if !errors.Is(err, f.want) {
					t.Fatalf("error %v, want %v", err, f.want)
				}
				if !strings.Contains(err.Error(), f.path+": ") {
					t.Errorf("error %q does not name %s", err, f.path)
				}
			})
		}
	}
}
