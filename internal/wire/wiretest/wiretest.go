// Package wiretest holds the formats built on internal/wire to the
// encoding of their committed fuzz seeds: whatever an earlier icn-agent
// wrote, and parses, must be written back the same, so that files keep
// their exact bytes across versions.
package wiretest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Seed returns the input of a committed fuzz seed: a file in the
// "go test fuzz v1" format holding one []byte.
func Seed(t testing.TB, path string) []byte {
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

// RoundTrip runs each fuzzer's parser (by fuzzer name) over its seeds in
// testdata/fuzz/NAME and fails unless every seed it accepts is written
// back so that same(seed, written) holds, and at least one seed parses.
func RoundTrip(t *testing.T, parsers map[string]func([]byte) ([]byte, error), same func(in, out []byte) bool) {
	t.Helper()
	for fuzzer, parse := range parsers {
		paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzer, "*"))
		if err != nil || len(paths) == 0 {
			t.Fatalf("%s: no seeds (%v)", fuzzer, err)
		}
		valid := 0
		for _, path := range paths {
			data := Seed(t, path)
			out, err := parse(data)
			if err != nil {
				continue
			}
			valid++
			if !same(data, out) {
				t.Errorf("%s: written back differently:\n%q\n%q", path, out, data)
			}
		}
		if valid == 0 {
			t.Errorf("%s: no seed parses", fuzzer)
		}
	}
}
