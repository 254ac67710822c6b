package recovery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmsim"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// The golden migration (testdata/migration at the top of the module) moves
// the golden backup's identity to the simulator started from
// testdata/blobs/sim-seed: target.srk is that TPM's storage root key as
// icn-agent srk writes it, work.migrate the file icn-agent migrate wrote
// for it (from a swtpm). Every later version must import it there.
const goldenMigrationDir = "../../testdata/migration/"

// openSeededSim opens the simulator started from the committed seed.
func openSeededSim(t *testing.T) *tpmdev.TPM {
	t.Helper()
	seed, err := os.ReadFile("../../testdata/blobs/sim-seed")
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, tpmsim.SeedFile), seed, 0o600); err != nil {
		t.Fatal(err)
	}
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

func TestGoldenMigration(t *testing.T) {
	ctx := context.Background()
	target := openSeededSim(t)
	srkData, _, err := ExportSRK(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	seed := sha256.Sum256([]byte(goldenBackupSeed))
	path := goldenMigrationDir + "work.migrate"
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && *updateGolden {
		if err := WriteNewFilePerm(goldenMigrationDir+"target.srk", srkData, 0o644); err != nil {
			t.Fatal(err)
		}
		srk, err := ParseSRK(srkData)
		if err != nil {
			t.Fatal(err)
		}
		source := newTPM(t, "swtpm")
		b := sealInto(t, source, openStore(t), "work", seed[:])
		b.Comment = "golden@icn-agent"
		m, err := Migrate(ctx, source, b, tpmseal.UnsealOptions{}, srk, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteNewFilePerm(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want, err := os.ReadFile(goldenMigrationDir + "target.srk"); err != nil || !bytes.Equal(srkData, want) {
		t.Fatalf("the seeded simulator's SRK file differs from target.srk (%v)", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMigration(data)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := m.Marshal(); err != nil || !bytes.Equal(again, data) {
		t.Fatalf("the migration file is written back differently (%v)", err)
	}
	if m.Name != "work" || m.Comment != "golden@icn-agent" {
		t.Fatalf("the migration file names %q %q", m.Name, m.Comment)
	}
	blob, err := ImportMigration(ctx, target, openStore(t), m, tpmseal.SealOptions{Comment: m.Comment})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(goldenBackupDir + "work.pub")
	if err != nil {
		t.Fatal(err)
	}
	if got := blob.AuthorizedKey(); !bytes.Equal(got, want) || blob.Name != "work" {
		t.Fatalf("imported %q as %s, want %q", got, blob.Name, want)
	}
}
