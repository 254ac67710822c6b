package sealstore

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// appendString appends s as a string of the wire encoding: a big-endian
// uint32 length, then s. The tests build blobs and signed policies field
// by field with it, written out here rather than taken from internal/wire
// so that they check the encoding, not just agree with it.
func appendString(w, s []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(s)))
	return append(w, s...)
}

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

// TestSeedsRoundTrip: the binary content of every committed seed that
// parses is written back byte for byte (the PEM armour around it may differ
// in whitespace), so the files of earlier icn-agents keep their encoding.
func TestSeedsRoundTrip(t *testing.T) {
	parsers := map[string]func([]byte) ([]byte, error){
		"FuzzParseBlob": func(data []byte) ([]byte, error) {
			b, err := ParseBlob(data)
			if err != nil {
				return nil, err
			}
			return b.Marshal()
		},
		"FuzzParseSignedPolicy": func(data []byte) ([]byte, error) {
			p, err := ParseSignedPolicy(data)
			if err != nil {
				return nil, err
			}
			return p.Marshal()
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
			in, _ := pem.Decode(bytes.TrimSpace(data))
			again, _ := pem.Decode(out)
			if in == nil || again == nil || !bytes.Equal(in.Bytes, again.Bytes) {
				t.Errorf("%s: written back differently", path)
			}
		}
		if valid == 0 {
			t.Errorf("%s: no seed parses", fuzzer)
		}
	}
}
