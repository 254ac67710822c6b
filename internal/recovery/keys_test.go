package recovery

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	"filippo.io/age/agessh"
)

func TestParseRecipients(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	_, sshPub := sshKeyPair(t, "ed25519", nil)
	_, rsaPub := sshKeyPair(t, "rsa", nil)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mixed := write("recipients.txt", "# team keys\n\n"+id.Recipient().String()+"\n"+sshPub+"  \n"+rsaPub)
	authorized := write("authorized_keys", sshPub)
	empty := write("empty", "# nobody\n\n")
	secret := write("secret.txt", id.String()+"\n")
	bad := write("bad.txt", id.Recipient().String()+"\nnot a key\n")

	tests := []struct {
		name  string
		arg   string
		n     int
		types []string // Go types of the recipients
		err   string
	}{
		{"age key", id.Recipient().String(), 1, []string{"*age.X25519Recipient"}, ""},
		{"age key with spaces", "  " + id.Recipient().String() + "\n", 1, []string{"*age.X25519Recipient"}, ""},
		{"SSH key line", strings.TrimSpace(sshPub), 1, []string{"*agessh.Ed25519Recipient"}, ""},
		{"SSH RSA key line", strings.TrimSpace(rsaPub), 1, []string{"*agessh.RSARecipient"}, ""},
		{"file of several kinds", mixed, 3, []string{"*age.X25519Recipient", "*agessh.Ed25519Recipient", "*agessh.RSARecipient"}, ""},
		{"a .pub or authorized_keys file", authorized, 1, []string{"*agessh.Ed25519Recipient"}, ""},
		{"bad age key", "age1qqqqqqqq", 0, nil, "bad age recipient"},
		{"a secret key", id.String(), 0, nil, "that is an age secret key, not a recipient"},
		{"a file of secret keys", secret, 0, nil, "that is an age secret key, not a recipient"},
		{"a bad line", bad, 0, nil, "bad.txt line 2"},
		{"no recipients", empty, 0, nil, "holds no recipients"},
		{"missing file", filepath.Join(dir, "missing"), 0, nil, "neither a public key nor a readable file"},
		{"truncated SSH key", "ssh-ed25519 AAAA", 0, nil, "bad SSH recipient"},
		{"ECDSA SSH key", "ecdsa-sha2-nistp256 AAAAE2VjZHNh me@example", 0, nil, "age cannot encrypt to ecdsa-sha2-nistp256 keys"},
		{"FIDO SSH key", "sk-ssh-ed25519@openssh.com AAAAGnNr me@example", 0, nil, "age cannot encrypt to sk-ssh-ed25519@openssh.com keys"},
		{"DSA SSH key", "ssh-dss AAAAB3NzaC1kc3M me@example", 0, nil, "bad SSH recipient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := ParseRecipients(tt.arg)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseRecipients = %v; want an error mentioning %q", err, tt.err)
				}
				if strings.Contains(err.Error(), id.String()[16:]) {
					t.Fatalf("the error shows a secret key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != tt.n {
				t.Fatalf("%d recipients; want %d", len(rs), tt.n)
			}
			for i, r := range rs {
				if got := typeName(r); got != tt.types[i] {
					t.Errorf("recipient %d is %s; want %s", i, got, tt.types[i])
				}
			}
		})
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *age.X25519Recipient:
		return "*age.X25519Recipient"
	case *agessh.Ed25519Recipient:
		return "*agessh.Ed25519Recipient"
	case *agessh.RSARecipient:
		return "*agessh.RSARecipient"
	}
	return "?"
}

func TestParseIdentities(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	plainSSH, _ := sshKeyPair(t, "ed25519", nil)
	lockedSSH, _ := sshKeyPair(t, "ed25519", []byte("sesame"))
	ask := func() ([]byte, error) { return []byte("sesame"), nil }
	tests := []struct {
		name string
		data string
		ask  func() ([]byte, error)
		n    int
		err  string
	}{
		{"age identity file", "# created: today\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n", nil, 1, ""},
		{"two age identities", id.String() + "\n\n" + id.String() + "\n", nil, 2, ""},
		{"OpenSSH key", string(plainSSH), nil, 1, ""},
		{"encrypted OpenSSH key", string(lockedSSH), ask, 1, ""},
		{"encrypted OpenSSH key, nothing to ask", string(lockedSSH), nil, 0, "encrypted SSH key and no passphrase can be asked for"},
		{"garbage", "hello\n", nil, 0, "is not an identity file"},
		{"a recipient", id.Recipient().String(), nil, 0, "is not an identity file"},
		{"bad age line", id.String() + "\nAGE-SECRET-KEY-1NOPE\n", nil, 0, "id: error at line 2"},
		{"plugin", "AGE-PLUGIN-YUBIKEY-1XYZ\n", nil, 0, "does not run age plugins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := ParseIdentities("id", []byte(tt.data), tt.ask)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseIdentities = %v; want an error mentioning %q", err, tt.err)
				}
				if strings.Contains(err.Error(), id.String()[16:]) || strings.Contains(err.Error(), "PRIVATE KEY") {
					t.Fatalf("the error shows key material: %v", err)
				}
				return
			}
			if err != nil || len(ids) != tt.n {
				t.Fatalf("ParseIdentities = %d identities, %v; want %d", len(ids), err, tt.n)
			}
		})
	}
}

// An encrypted SSH identity asks for its passphrase only when a file is
// encrypted to it, and a wrong one is an error, not "no match".
func TestEncryptedSSHIdentityAsksOnlyWhenNeeded(t *testing.T) {
	locked, pub := sshKeyPair(t, "ed25519", []byte("sesame"))
	asked := 0
	pass := "sesame"
	ids, err := ParseIdentities("id", locked, func() ([]byte, error) { asked++; return []byte(pass), nil })
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBackup(t, randomSeed(t))
	other, _ := keyKinds[0].make(t)
	notForIt, err := b.Encrypt(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecryptBackup(notForIt, &Keys{Identities: ids}); err == nil {
		t.Fatal("decrypted a file not encrypted to the key")
	}
	if asked != 0 {
		t.Fatalf("asked for the passphrase %d times for a file not encrypted to the key", asked)
	}
	r, err := ParseRecipient(pub)
	if err != nil {
		t.Fatal(err)
	}
	forIt, err := b.Encrypt(r)
	if err != nil {
		t.Fatal(err)
	}
	pass = "wrong"
	if _, err := DecryptBackup(forIt, &Keys{Identities: ids}); err == nil || !strings.Contains(err.Error(), "decrypt SSH key file") {
		t.Fatalf("wrong SSH key passphrase: %v", err)
	}
	pass = "sesame"
	got, err := DecryptBackup(forIt, &Keys{Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	got.Destroy()
}

func TestPassphraseRecipient(t *testing.T) {
	if _, err := PassphraseRecipient(nil, 0); !errors.Is(err, ErrEmptyPassphrase) {
		t.Fatalf("empty passphrase: %v", err)
	}
	if _, err := PassphraseRecipient([]byte("x"), 23); err == nil {
		t.Fatal("work factor 23 accepted")
	}
	b := newTestBackup(t, randomSeed(t))
	r, err := PassphraseRecipient([]byte("x"), testWorkFactor)
	if err != nil {
		t.Fatal(err)
	}
	data, err := b.Encrypt(r)
	if err != nil {
		t.Fatal(err)
	}
	// The passphrase source is asked once, and an error from it (no
	// terminal, say) comes back as is.
	noTTY := errors.New("no terminal; pass --passphrase-file FILE")
	if _, err := DecryptBackup(data, &Keys{Passphrase: func() ([]byte, error) { return nil, noTTY }}); err != noTTY {
		t.Fatalf("passphrase source error = %v; want it unchanged", err)
	}
	if _, err := DecryptBackup(data, &Keys{Passphrase: func() ([]byte, error) { return []byte{}, nil }}); !errors.Is(err, ErrEmptyPassphrase) {
		t.Fatalf("empty passphrase = %v", err)
	}
}

func TestIsAgeEncrypted(t *testing.T) {
	tests := []struct {
		data string
		want bool
	}{
		{"age-encryption.org/v1\n-> X25519 abc\n", true},
		{"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n", true},
		{"\n\t  -----BEGIN AGE ENCRYPTED FILE-----\n", true},
		{"-----BEGIN OPENSSH PRIVATE KEY-----\n", false},
		{"age-encryption.org/v2\n", false},
		{"", false},
		{"x-----BEGIN AGE ENCRYPTED FILE-----", false},
	}
	for _, tt := range tests {
		if got := IsAgeEncrypted([]byte(tt.data)); got != tt.want {
			t.Errorf("IsAgeEncrypted(%q) = %v; want %v", tt.data, got, tt.want)
		}
	}
}

func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteNewFile(path, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewFile(path, []byte("two")); !errors.Is(err, ErrFileExists) {
		t.Fatalf("over an existing file: %v; want ErrFileExists", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "one" {
		t.Fatalf("content %q; want the first write's", got)
	}
	// Mode 0600 unless told otherwise, whatever the umask.
	pub := filepath.Join(dir, "pub")
	if err := WriteNewFilePerm(pub, []byte("public"), 0o644); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, pub: 0o644} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	// A dangling symlink is not followed to create its target.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "target"), link); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewFile(link, []byte("x")); !errors.Is(err, ErrFileExists) {
		t.Fatalf("over a dangling symlink: %v; want ErrFileExists", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "target")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("wrote through a symlink")
	}
	if err := WriteNewFile(filepath.Join(dir, "missing", "f"), []byte("x")); err == nil {
		t.Fatal("wrote into a missing directory")
	}

	// Racing writers: exactly one wins, and the file is whole.
	race := filepath.Join(dir, "race")
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := []string{}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := strings.Repeat(string(rune('a'+i)), 4096)
			err := WriteNewFile(race, []byte(content))
			if err == nil {
				mu.Lock()
				won = append(won, content)
				mu.Unlock()
			} else if !errors.Is(err, ErrFileExists) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("%d writers won; want 1", len(won))
	}
	if got, _ := os.ReadFile(race); string(got) != won[0] {
		t.Fatal("the file is not the winner's content")
	}
	fi, err := os.Stat(race)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// No temporary file is left behind.
	for _, n := range dirNames(t, dir) {
		if strings.HasSuffix(n, ".tmp") {
			t.Errorf("left %s behind", n)
		}
	}
}
