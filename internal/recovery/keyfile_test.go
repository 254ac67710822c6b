package recovery

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

func ageEncrypt(t *testing.T, r age.Recipient, plain []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := age.Encrypt(&out, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Every form of an Ed25519 key gives its seed; everything else is refused
// with its sentinel, naming the file.
func TestReadEd25519Seed(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	plain, err := ssh.MarshalPrivateKey(priv, "me@host")
	if err != nil {
		t.Fatal(err)
	}
	protected, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keys := func() (*Keys, error) { return &Keys{Identities: []age.Identity{id}}, nil }
	pass := func(p string) func() ([]byte, error) {
		return func() ([]byte, error) { return []byte(p), nil }
	}

	for name, tc := range map[string]struct {
		data []byte
		opts KeyFileOptions
	}{
		"openssh":       {pem.EncodeToMemory(plain), KeyFileOptions{}},
		"passphrase":    {pem.EncodeToMemory(protected), KeyFileOptions{Passphrase: pass("secret")}},
		"pkcs8":         {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), KeyFileOptions{}},
		"age":           {ageEncrypt(t, id.Recipient(), pem.EncodeToMemory(plain)), KeyFileOptions{Keys: keys}},
		"age+protected": {ageEncrypt(t, id.Recipient(), pem.EncodeToMemory(protected)), KeyFileOptions{Keys: keys, Passphrase: pass("secret")}},
	} {
		got, err := ReadEd25519Seed(write(name, tc.data), tc.opts)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got.Bytes(), seed) {
			t.Errorf("%s: wrong seed", name)
		}
		got.Destroy()
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM, err := ssh.MarshalPrivateKey(rsaKey, "")
	if err != nil {
		t.Fatal(err)
	}
	bk, err := NewBackup("id", "", seed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bkBuf, err := bk.marshal()
	bk.Destroy()
	if err != nil {
		t.Fatal(err)
	}
	defer bkBuf.Destroy()
	bkPlain := bkBuf.Bytes()
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		data []byte
		opts KeyFileOptions
		want error
	}{
		"rsa":              {pem.EncodeToMemory(rsaPEM), KeyFileOptions{}, ErrNotEd25519},
		"junk":             {[]byte("hello"), KeyFileOptions{}, ErrNotPrivateKey},
		"wrong passphrase": {pem.EncodeToMemory(protected), KeyFileOptions{Passphrase: pass("guess")}, ErrWrongPassphrase},
		"no passphrase":    {pem.EncodeToMemory(protected), KeyFileOptions{}, ErrNotPrivateKey},
		"backup":           {ageEncrypt(t, id.Recipient(), bkPlain), KeyFileOptions{Keys: keys}, ErrBackupNotKey},
	} {
		path := write(strings.ReplaceAll(name, " ", "_"), tc.data)
		_, err := ReadEd25519Seed(path, tc.opts)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want %v naming the file", name, err, tc.want)
		}
	}

	// An age file nothing here decrypts is a DecryptError telling what it
	// is encrypted to.
	_, err = ReadEd25519Seed(write("other", ageEncrypt(t, other.Recipient(), pem.EncodeToMemory(plain))), KeyFileOptions{Keys: keys})
	var de *DecryptError
	var nm *NoMatchError
	if !errors.As(err, &de) || !errors.As(err, &nm) || nm.RecipientKinds() != "an age key" {
		t.Errorf("age file for another key: %v, want a DecryptError with a NoMatchError for an age key", err)
	}
	// The passphrase and keys functions report their own errors as they
	// are.
	errNoTTY := errors.New("no terminal")
	if _, err := ReadEd25519Seed(filepath.Join(dir, "passphrase"), KeyFileOptions{Passphrase: func() ([]byte, error) { return nil, errNoTTY }}); err != errNoTTY {
		t.Errorf("passphrase error: %v, want it as it is", err)
	}
}

func TestPublicKeyComment(t *testing.T) {
	dir := t.TempDir()
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	pub, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(seed).Public())
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " me@host\n"
	path := filepath.Join(dir, "id.pub")
	if err := os.WriteFile(path, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := PublicKeyComment(path, seed); got != "me@host" {
		t.Errorf("comment %q, want me@host", got)
	}
	if got := PublicKeyComment(path, bytes.Repeat([]byte{8}, ed25519.SeedSize)); got != "" {
		t.Errorf("another key's comment taken: %q", got)
	}
	if got := PublicKeyComment(filepath.Join(dir, "none.pub"), seed); got != "" {
		t.Errorf("comment %q from no file", got)
	}
}

func TestRecipientKinds(t *testing.T) {
	nm := &NoMatchError{StanzaTypes: []string{"X25519", "scrypt", "X25519", "piv-p256"}}
	if got, want := nm.RecipientKinds(), "an age key or a passphrase or a piv-p256 recipient"; got != want {
		t.Errorf("RecipientKinds = %q, want %q", got, want)
	}
}

func TestReadIdentityFilesAndRecipientArgs(t *testing.T) {
	dir := t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "key.txt")
	if err := os.WriteFile(path, []byte("# created: now\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := ParseRecipientArgs([]string{id.Recipient().String()})
	if err != nil || len(rs) != 1 {
		t.Fatalf("ParseRecipientArgs = %v, %v", rs, err)
	}
	if _, err := ParseRecipientArgs([]string{"age1nope"}); err == nil || !strings.Contains(err.Error(), "a recipient is an age public key") {
		t.Errorf("bad recipient: %v", err)
	}
	ids, err := ReadIdentityFiles([]string{path}, nil)
	if err != nil || len(ids) != 1 {
		t.Fatalf("ReadIdentityFiles = %v, %v", ids, err)
	}
	plain, err := Decrypt(ageEncrypt(t, rs[0], []byte("hi")), &Keys{Identities: ids}, 100)
	if err != nil || string(plain.Bytes()) != "hi" {
		t.Fatalf("decrypt with the identity read: %v", err)
	}
	plain.Destroy()
	missing := filepath.Join(dir, "none")
	if _, err := ReadIdentityFiles([]string{path, missing}, nil); err == nil || !strings.HasPrefix(err.Error(), "identity file: ") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing identity file: %v", err)
	}
}
