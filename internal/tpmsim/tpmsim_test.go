//go:build cgo

package tpmsim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimSeedPersists(t *testing.T) {
	dir := t.TempDir()
	a, err := loadSimSeed(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadSimSeed(dir)
	if err != nil || a != b {
		t.Fatalf("second load = %v, %v; want %v", b, err, a)
	}
	fi, err := os.Stat(filepath.Join(dir, SeedFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if err := os.WriteFile(filepath.Join(dir, SeedFile), []byte("nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSimSeed(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt seed: %v; want an error", err)
	}
}
