package recovery

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/sealstore"
)

// testWorkFactor keeps scrypt fast in tests; files made with it still
// decrypt with the default limits.
const testWorkFactor = 10

func randomSeed(t testing.TB) []byte {
	t.Helper()
	seed := make([]byte, sealstore.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	return seed
}

func newTestBackup(t testing.TB, seed []byte) *Backup {
	t.Helper()
	b, err := NewBackup("work", "me@example", seed, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Destroy)
	return b
}

// sshKeyPair returns an OpenSSH private key file (encrypted if pass is not
// empty) and its authorized_keys line.
func sshKeyPair(t testing.TB, kind string, pass []byte) (priv []byte, pub string) {
	t.Helper()
	var key any
	switch kind {
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	var block *pem.Block
	var err error
	if len(pass) > 0 {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(key, "backup@example", pass)
	} else {
		block, err = ssh.MarshalPrivateKey(key, "backup@example")
	}
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}

// keysFor returns a recipient and the keys that decrypt files made for it.
type keyKind struct {
	name string
	make func(t *testing.T) (age.Recipient, *Keys)
}

var keyKinds = []keyKind{
	{"age X25519", func(t *testing.T) (age.Recipient, *Keys) {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseRecipient(id.Recipient().String())
		if err != nil {
			t.Fatal(err)
		}
		ids, err := ParseIdentities("id.txt", []byte("# created: now\n"+id.String()+"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return r, &Keys{Identities: ids}
	}},
	{"age post-quantum", func(t *testing.T) (age.Recipient, *Keys) {
		id, err := age.GenerateHybridIdentity()
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseRecipient(id.Recipient().String())
		if err != nil {
			t.Fatal(err)
		}
		ids, err := ParseIdentities("id.txt", []byte(id.String()+"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return r, &Keys{Identities: ids}
	}},
	{"SSH Ed25519", func(t *testing.T) (age.Recipient, *Keys) {
		priv, pub := sshKeyPair(t, "ed25519", nil)
		r, err := ParseRecipient(pub)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := ParseIdentities("id_ed25519", priv, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r, &Keys{Identities: ids}
	}},
	{"SSH RSA", func(t *testing.T) (age.Recipient, *Keys) {
		priv, pub := sshKeyPair(t, "rsa", nil)
		r, err := ParseRecipient(pub)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := ParseIdentities("id_rsa", priv, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r, &Keys{Identities: ids}
	}},
	{"passphrase-protected SSH Ed25519", func(t *testing.T) (age.Recipient, *Keys) {
		priv, pub := sshKeyPair(t, "ed25519", []byte("sesame"))
		r, err := ParseRecipient(pub)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := ParseIdentities("id_ed25519", priv, func() ([]byte, error) { return []byte("sesame"), nil })
		if err != nil {
			t.Fatal(err)
		}
		return r, &Keys{Identities: ids}
	}},
	{"passphrase", func(t *testing.T) (age.Recipient, *Keys) {
		r, err := PassphraseRecipient([]byte("correct horse"), testWorkFactor)
		if err != nil {
			t.Fatal(err)
		}
		return r, &Keys{Passphrase: func() ([]byte, error) { return []byte("correct horse"), nil }}
	}},
}

func TestBackupRoundTrip(t *testing.T) {
	for _, kk := range keyKinds {
		t.Run(kk.name, func(t *testing.T) {
			seed := randomSeed(t)
			b := newTestBackup(t, seed)
			r, keys := kk.make(t)
			data, err := b.Encrypt(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, []byte(armor.Header+"\n")) || !bytes.HasSuffix(data, []byte(armor.Footer+"\n")) {
				t.Fatalf("not an armored age file:\n%s", data)
			}
			if bytes.Contains(data, seed) || bytes.Contains(data, []byte("me@example")) {
				t.Fatal("the backup file holds plaintext")
			}
			got, err := DecryptBackup(data, keys)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Destroy()
			if !bytes.Equal(got.Seed(), seed) || got.Name != "work" || got.Comment != "me@example" ||
				!bytes.Equal(got.PublicKey.Marshal(), b.PublicKey.Marshal()) || !got.Created.Equal(b.Created) {
				t.Fatalf("decrypted %+v; want %+v", got, b)
			}
			// The binary, unarmored form is accepted too (age -d output).
			bin, err := io.ReadAll(armor.NewReader(bytes.NewReader(data)))
			if err != nil {
				t.Fatal(err)
			}
			if got2, err := DecryptBackup(bin, keys); err != nil || !bytes.Equal(got2.Seed(), seed) {
				t.Fatalf("binary form: %v", err)
			} else {
				got2.Destroy()
			}
		})
	}
}

// Every kind of key fails with a clear error when it is the wrong one, and
// a file says what it is encrypted to when no key is given.
func TestBackupWrongKeys(t *testing.T) {
	seed := randomSeed(t)
	b := newTestBackup(t, seed)
	for _, kk := range keyKinds {
		t.Run(kk.name, func(t *testing.T) {
			r, _ := kk.make(t)
			_, wrong := kk.make(t)
			data, err := b.Encrypt(r)
			if err != nil {
				t.Fatal(err)
			}
			var nm *NoMatchError
			if kk.name == "passphrase" {
				wrong.Passphrase = func() ([]byte, error) { return []byte("battery staple"), nil }
				if _, err = DecryptBackup(data, wrong); !errors.Is(err, ErrWrongPassphrase) {
					t.Fatalf("wrong passphrase: %v; want ErrWrongPassphrase", err)
				}
				if _, err = DecryptBackup(data, &Keys{}); !errors.As(err, &nm) || !nm.PassphraseEncrypted() {
					t.Fatalf("no passphrase: %v; want a NoMatchError for a passphrase-encrypted file", err)
				}
				return
			}
			_, err = DecryptBackup(data, wrong)
			if !errors.As(err, &nm) || nm.Identities != len(wrong.Identities) {
				t.Fatalf("wrong identity: %v; want NoMatchError", err)
			}
			// With no identity the error still says what would do.
			_, err = DecryptBackup(data, &Keys{Passphrase: func() ([]byte, error) {
				t.Error("asked for a passphrase for a file that is not passphrase-encrypted")
				return nil, errors.New("no")
			}})
			if !errors.As(err, &nm) || nm.PassphraseEncrypted() || len(nm.StanzaTypes) == 0 || nm.Identities != 0 {
				t.Fatalf("no identity: %v; want NoMatchError naming the recipient kinds", err)
			}
			if !strings.Contains(err.Error(), "no identity was given") {
				t.Errorf("error %q", err)
			}
		})
	}
}

// A file to several recipients decrypts with any one of them.
func TestBackupSeveralRecipients(t *testing.T) {
	seed := randomSeed(t)
	b := newTestBackup(t, seed)
	var rs []age.Recipient
	var ks []*Keys
	// age refuses to mix post-quantum and classic recipients: take the
	// classic ones.
	for _, kk := range []keyKind{keyKinds[0], keyKinds[2], keyKinds[3]} {
		r, k := kk.make(t)
		rs, ks = append(rs, r), append(ks, k)
	}
	data, err := b.Encrypt(rs...)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range ks {
		got, err := DecryptBackup(data, k)
		if err != nil || !bytes.Equal(got.Seed(), seed) {
			t.Fatalf("recipient %d: %v", i, err)
		}
		got.Destroy()
	}
	// age refuses to mix a passphrase with other recipients, and
	// post-quantum with classic ones.
	pass, _ := keyKinds[len(keyKinds)-1].make(t)
	if _, err := b.Encrypt(rs[0], pass); err == nil {
		t.Fatal("a passphrase was mixed with a public-key recipient")
	}
	pq, _ := keyKinds[1].make(t)
	if _, err := b.Encrypt(rs[0], pq); err == nil || !strings.Contains(err.Error(), "post-quantum") {
		t.Fatalf("post-quantum mixed with classic: %v", err)
	}
}

// A damaged file fails to decrypt; it never yields a damaged seed.
func TestBackupDamaged(t *testing.T) {
	seed := randomSeed(t)
	b := newTestBackup(t, seed)
	r, keys := keyKinds[0].make(t)
	data, err := b.Encrypt(r)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := io.ReadAll(armor.NewReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{len(bin) - 1, len(bin) - 20, bytes.Index(bin, []byte("\n---")) - 3} {
		bad := bytes.Clone(bin)
		bad[i] ^= 0x20
		if got, err := DecryptBackup(bad, keys); err == nil {
			got.Destroy()
			t.Fatalf("byte %d flipped: decrypted anyway", i)
		}
	}
	if _, err := DecryptBackup(bin[:len(bin)-10], keys); err == nil {
		t.Fatal("truncated file decrypted")
	}
	if _, err := DecryptBackup([]byte("hello"), keys); !errors.Is(err, ErrNotAge) {
		t.Fatalf("not age: %v; want ErrNotAge", err)
	}
}

// plaintext builds a backup plaintext field by field, for malformed cases.
type plaintext struct {
	magic, name, comment string
	version              uint32
	key, seed            []byte
	created              int64
	trailing             []byte
}

func (p plaintext) bytes() []byte {
	var w []byte
	w = appendString(w, []byte(p.magic))
	w = binary.BigEndian.AppendUint32(w, p.version)
	w = appendString(w, []byte(p.name))
	w = appendString(w, []byte(p.comment))
	w = appendString(w, p.key)
	w = appendString(w, p.seed)
	w = binary.BigEndian.AppendUint64(w, uint64(p.created))
	return append(w, p.trailing...)
}

func TestParseBackup(t *testing.T) {
	seed := randomSeed(t)
	pub, err := sealstore.PublicKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	other, err := sealstore.PublicKey(randomSeed(t))
	if err != nil {
		t.Fatal(err)
	}
	_, rsaPub := sshKeyPair(t, "rsa", nil)
	rsaKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rsaPub))
	if err != nil {
		t.Fatal(err)
	}
	good := plaintext{magic: backupMagic, version: 1, name: "work", comment: "me@example", key: pub.Marshal(), seed: seed, created: 1700000000}

	// What Marshal writes is exactly the documented layout.
	b := newTestBackup(t, seed)
	m, err := b.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Bytes(), good.bytes()) {
		t.Fatalf("marshal = %x\nwant      %x", m.Bytes(), good.bytes())
	}
	m.Destroy()

	tests := []struct {
		name   string
		mutate func(p *plaintext)
		want   error
		text   string
	}{
		{"good", func(p *plaintext) {}, nil, ""},
		{"empty comment", func(p *plaintext) { p.comment = "" }, nil, ""},
		{"magic", func(p *plaintext) { p.magic = "icn-agent-sealed-identity" }, ErrMalformed, "not an icn-agent backup"},
		{"newer version", func(p *plaintext) { p.version = 2 }, ErrUnsupportedVersion, "backup version 2"},
		{"bad name", func(p *plaintext) { p.name = "../x" }, ErrMalformed, "name"},
		{"comment with a newline", func(p *plaintext) { p.comment = "a\nb" }, ErrMalformed, "control character"},
		{"comment not UTF-8", func(p *plaintext) { p.comment = "\xff" }, ErrMalformed, "not valid UTF-8"},
		{"short seed", func(p *plaintext) { p.seed = p.seed[:31] }, ErrMalformed, "seed: want 32 bytes"},
		{"long seed", func(p *plaintext) { p.seed = append(p.seed, 0) }, ErrMalformed, "seed: length 33"},
		{"another key's public key", func(p *plaintext) { p.key = other.Marshal() }, ErrMalformed, "not the public key of the seed"},
		{"RSA key", func(p *plaintext) { p.key = rsaKey.Marshal() }, ErrMalformed, "ssh public key"},
		{"trailing bytes", func(p *plaintext) { p.trailing = []byte{0} }, ErrMalformed, "1 trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := good
			p.seed = bytes.Clone(seed)
			tt.mutate(&p)
			got, err := ParseBackup(p.bytes())
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				got.Destroy()
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("ParseBackup = %v; want %v mentioning %q", err, tt.want, tt.text)
			}
		})
	}
	// Every truncation is an error, never a panic.
	full := good.bytes()
	for n := range len(full) {
		if got, err := ParseBackup(full[:n]); err == nil {
			got.Destroy()
			t.Fatalf("truncated to %d bytes: parsed", n)
		}
	}
}

func TestBackupWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "work.age")
	b := newTestBackup(t, randomSeed(t))
	r, keys := keyKinds[0].make(t)
	if err := b.WriteFile(path, r); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", fi.Mode().Perm())
	}
	before, _ := os.ReadFile(path)
	if err := b.WriteFile(path, r); !errors.Is(err, ErrFileExists) {
		t.Fatalf("second write = %v; want ErrFileExists", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("an existing backup was changed")
	}
	got, err := ReadBackupFile(path, keys)
	if err != nil {
		t.Fatal(err)
	}
	got.Destroy()
	if _, err := ReadBackupFile(filepath.Join(dir, "missing.age"), keys); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"work.age"}) {
		t.Fatalf("directory holds %v; want only work.age", names)
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestIsBackup(t *testing.T) {
	b := newTestBackup(t, randomSeed(t))
	m, err := b.marshal()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Destroy()
	newer := plaintext{magic: backupMagic, version: 2}.bytes()
	key, _ := sshKeyPair(t, "ed25519", nil)
	for _, tt := range []struct {
		name string
		data []byte
		want bool
	}{
		{"a backup", m.Bytes(), true},
		{"a newer backup", newer, true},
		{"an OpenSSH key", key, false},
		{"empty", nil, false},
		{"a huge length", []byte{0xff, 0xff, 0xff, 0xff}, false},
	} {
		if got := IsBackup(tt.data); got != tt.want {
			t.Errorf("%s: IsBackup = %v; want %v", tt.name, got, tt.want)
		}
	}
}
