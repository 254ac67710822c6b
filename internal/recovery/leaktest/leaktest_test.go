package leaktest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
)

// The scanner must catch a seed however it was written, or a clean scan
// proves nothing.
func TestFindsEncodedSecrets(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	priv := ed25519.NewKeyFromSeed(seed)
	secrets := Ed25519Secrets(seed)

	openssh, err := ssh.MarshalPrivateKey(priv, "me@example")
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	wrapped := func(b []byte) []byte {
		var out bytes.Buffer
		s := base64.StdEncoding.EncodeToString(b)
		for len(s) > 0 {
			n := min(len(s), 64)
			out.WriteString(s[:n] + "\n")
			s = s[n:]
		}
		return out.Bytes()
	}
	tests := []struct {
		name string
		data []byte
		want string // a secret name that must be found; "" for none
	}{
		{"raw seed in a binary file", append(append([]byte("head"), seed...), "tail"...), "seed"},
		{"OpenSSH private key file", pem.EncodeToMemory(openssh), "seed"},
		{"OpenSSH key, no comment", pem.EncodeToMemory(pkcs8), "seed"},
		{"hex in a log line", []byte("debug: seed=" + hex.EncodeToString(seed) + "\n"), "seed"},
		{"base64 wrapped at offset 1", wrapped(append([]byte{1}, seed...)), "seed"},
		{"base64 wrapped at offset 2", wrapped(append([]byte{1, 2}, seed...)), "seed"},
		{"url base64", []byte(base64.RawURLEncoding.EncodeToString(append([]byte{7, 7, 7, 7}, secrets["expanded secret"]...))), "expanded secret"},
		{"only the scalar", append([]byte("x"), secrets["scalar"]...), "scalar"},
		{"the public key is not a secret", []byte(ssh.MarshalAuthorizedKey(must(ssh.NewPublicKey(priv.Public())))), ""},
		{"unrelated random bytes", func() []byte { b := make([]byte, 4096); rand.Read(b); return b }(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			found := Find(tt.data, secrets)
			if tt.want == "" {
				if len(found) > 0 {
					t.Fatalf("found %v in data that holds no secret", found)
				}
				return
			}
			for _, f := range found {
				if f.Secret == tt.want {
					return
				}
			}
			t.Fatalf("did not find %s; found %v", tt.want, found)
		})
	}
}

func TestScan(t *testing.T) {
	seed := make([]byte, 32)
	rand.Read(seed)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a/b"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "a/clean"), []byte("nothing here"), 0o600)
	os.WriteFile(filepath.Join(dir, "a/b/leak"), []byte(hex.EncodeToString(seed)), 0o600)
	os.Symlink(filepath.Join(dir, "a/b/leak"), filepath.Join(dir, "link"))
	found, n, err := Scan([]string{dir, filepath.Join(dir, "missing")}, Ed25519Secrets(seed))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("scanned %d files; want 2 (symlinks are not followed)", n)
	}
	if len(found) != 1 || found[0].Path != filepath.Join(dir, "a/b/leak") || found[0].Secret != "seed" || found[0].Encoding != "hex" {
		t.Fatalf("found %v; want the seed in hex in a/b/leak", found)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
