// Package leaktest finds secrets in files. Tests use it to prove that an
// Ed25519 seed never reached the disk in clear, whatever wrote it and in
// whatever common encoding.
//
// A secret can hide in a file in more ways than its raw bytes: a private
// key file holds it in base64 (at any offset, so at any of the three base64
// alignments, possibly wrapped over lines), a debug dump in hex. For each
// secret, [Patterns] lists the byte strings that give it away:
//
//   - the raw bytes;
//   - lower- and upper-case hex;
//   - standard and URL-safe base64 of the secret placed at each of the
//     three offsets modulo 3, keeping only the characters that depend on
//     the secret alone (about 40 for 32 bytes: no false positives).
//
// [Scan] walks directory trees and reports every regular file that
// contains a pattern, looking at each file both as is and with line breaks
// removed. For an Ed25519 seed, [Ed25519Secrets] names the seed and the
// keys derived from it.
//
//	found, n, err := leaktest.Scan([]string{home, store}, leaktest.Ed25519Secrets(seed))
//	if err != nil || n == 0 || len(found) > 0 { t.Fatal(...) }
package leaktest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Pattern is one encoding of a secret.
type Pattern struct {
	// Encoding names it: "raw", "hex", "HEX", "base64+1", "base64url+2"...
	Encoding string
	// Bytes is what to look for.
	Bytes []byte
}

// Patterns returns the encodings of secret to look for; see the package
// documentation. secret must be at least 16 bytes, so that no pattern is
// short enough to match by chance.
func Patterns(secret []byte) []Pattern {
	if len(secret) < 16 {
		panic("leaktest: secret too short to search for")
	}
	ps := []Pattern{
		{"raw", bytes.Clone(secret)},
		{"hex", []byte(hex.EncodeToString(secret))},
		{"HEX", []byte(strings.ToUpper(hex.EncodeToString(secret)))},
	}
	for _, enc := range []struct {
		name string
		e    *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for off := 0; off < 3; off++ {
			in := append(make([]byte, off), secret...)
			s := enc.e.EncodeToString(in)
			start := 0
			if off > 0 {
				start = 4 // the first group mixes in the padding bytes
			}
			end := 4 * (len(in) / 3) // a last partial group depends on what follows
			ps = append(ps, Pattern{fmt.Sprintf("%s+%d", enc.name, off), []byte(s[start:end])})
		}
	}
	return ps
}

// Ed25519Secrets returns the secrets an Ed25519 seed gives away: the seed,
// Go's 64-byte private key (seed || public key), and the 64-byte expanded
// secret of RFC 8032 (SHA-512 of the seed: scalar || prefix) with its
// halves.
func Ed25519Secrets(seed []byte) map[string][]byte {
	priv := ed25519.NewKeyFromSeed(seed)
	h := sha512.Sum512(seed)
	return map[string][]byte{
		"seed":            bytes.Clone(seed),
		"private key":     []byte(priv),
		"expanded secret": h[:],
		"scalar":          h[:32],
		"prefix":          h[32:],
	}
}

// Finding is a secret found in a file.
type Finding struct {
	Path     string
	Secret   string
	Encoding string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s: %s (%s)", f.Path, f.Secret, f.Encoding)
}

// Find returns the secrets (by name) found in data, with their encoding.
func Find(data []byte, secrets map[string][]byte) []Finding {
	unwrapped := strings.NewReplacer("\n", "", "\r", "").Replace(string(data))
	var out []Finding
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		for _, p := range Patterns(secrets[name]) {
			if bytes.Contains(data, p.Bytes) || strings.Contains(unwrapped, string(p.Bytes)) {
				out = append(out, Finding{Secret: name, Encoding: p.Encoding})
				break
			}
		}
	}
	return out
}

// Scan walks the directory trees at roots (missing roots are skipped) and
// returns every secret found in a regular file, and how many files it
// read. Symbolic links are not followed.
func Scan(roots []string, secrets map[string][]byte) ([]Finding, int, error) {
	var out []Finding
	n := 0
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if path == root && os.IsNotExist(err) {
					return filepath.SkipDir
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			n++
			for _, f := range Find(data, secrets) {
				f.Path = path
				out = append(out, f)
			}
			return nil
		})
		if err != nil {
			return nil, n, err
		}
	}
	return out, n, nil
}
