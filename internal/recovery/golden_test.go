package recovery

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readSeed returns the input of a committed fuzz seed, a file in the go
// test fuzz v1 format holding one []byte.
func readSeed(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lit, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "go test fuzz v1\n[]byte(")
	lit, ok2 := strings.CutSuffix(lit, ")")
	s, err := strconv.Unquote(lit)
	if !ok || !ok2 || err != nil {
		t.Fatalf("%s: not a go test fuzz v1 []byte seed", path)
	}
	return []byte(s)
}

// TestSeedsRoundTrip: every committed seed that parses is written back
// byte for byte, so the files of earlier icn-agents keep their exact
// encoding.
func TestSeedsRoundTrip(t *testing.T) {
	parsers := map[string]func([]byte) ([]byte, error){
		"FuzzParseBackup": func(data []byte) ([]byte, error) {
			b, err := ParseBackup(data)
			if err != nil {
				return nil, err
			}
			defer b.Destroy()
			m, err := b.marshal()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Destroy()
			return bytes.Clone(m.Bytes()), nil
		},
		"FuzzParseMigration": func(data []byte) ([]byte, error) {
			m, err := ParseMigration(data)
			if err != nil {
				return nil, err
			}
			return m.Marshal()
		},
	}
	for fuzzer, parse := range parsers {
		paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzer, "*"))
		if err != nil || len(paths) == 0 {
			t.Fatalf("%s: no seeds (%v)", fuzzer, err)
		}
		valid := 0
		for _, path := range paths {
			data := readSeed(t, path)
			out, err := parse(data)
			if err != nil {
				continue
			}
			valid++
			if !bytes.Equal(out, data) {
				t.Errorf("%s: written back differently:\n%q\n%q", path, out, data)
			}
		}
		if valid == 0 {
			t.Errorf("%s: no seed parses", fuzzer)
		}
	}
}
