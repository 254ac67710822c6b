package recovery

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParseBackup feeds ParseBackup arbitrary plaintexts, as a damaged or
// forged backup file would give after decryption. It must not panic, every
// error must wrap ErrMalformed or ErrUnsupportedVersion, and what it
// accepts must be exactly what marshal writes back: the format has one
// encoding. Named seeds are in testdata/fuzz/FuzzParseBackup.
func FuzzParseBackup(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBackup(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrUnsupportedVersion: %v", err)
			}
			return
		}
		defer b.Destroy()
		m, err := b.marshal()
		if err != nil {
			t.Fatal(err)
		}
		defer m.Destroy()
		if !bytes.Equal(m.Bytes(), data) {
			t.Fatalf("accepted a backup that marshals differently:\n%x\n%x", data, m.Bytes())
		}
	})
}

// FuzzParseMigration feeds ParseMigration arbitrary files, as a damaged or
// forged migration file would be. It must not panic, every error must wrap
// ErrMalformed or ErrUnsupportedVersion, and what it accepts must marshal
// and parse back to the same file. Named seeds (from a real migration
// between the simulator and a swtpm) are in
// testdata/fuzz/FuzzParseMigration.
func FuzzParseMigration(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMigration(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrUnsupportedVersion: %v", err)
			}
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("accepted a migration that does not marshal: %v", err)
		}
		again, err := ParseMigration(out)
		if err != nil {
			t.Fatalf("marshalled migration does not parse: %v", err)
		}
		out2, err := again.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the migration: %v", err)
		}
	})
}
