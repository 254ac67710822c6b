package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/prompt"
	"github.com/icn/icn-agent/internal/recovery/leaktest"
	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/swtpmtest"
)

// inProcess runs icn-agent commands in this process, against one store and one
// TPM, with an empty configuration.
type inProcess struct {
	t      *testing.T
	config string
}

// run runs args with --config appended and returns the exit code, stdout
// and stderr.
func (c *inProcess) run(args ...string) (int, string, string) {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	e := &cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	code := commands.Run(append(args, "--config", c.config), e)
	return code, stdout.String(), stderr.String()
}

// ok runs args and fails the test unless they succeed.
func (c *inProcess) ok(args ...string) string {
	c.t.Helper()
	code, stdout, stderr := c.run(args...)
	if code != cli.ExitOK {
		c.t.Fatalf("icn-agent %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// Backup, restore and migration as the commands do them, from a key the
// test knows, then every file in every directory they touched is read: no
// seed, and no key derived from it, is on disk in clear in any encoding.
// The key is handed over age-encrypted (binary age, as the earlier
// software keystore wrote it), so the test itself writes it nowhere in
// clear either.
func TestRecoveryCommandsWriteNoSeed(t *testing.T) {
	home := t.TempDir()
	c := &inProcess{t: t, config: filepath.Join(home, "config.toml")}
	if err := os.WriteFile(c.config, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	source, target, third := swtpmtest.Start(t), swtpmtest.Start(t), swtpmtest.Start(t)
	srcStore, dstStore, thirdStore := filepath.Join(home, "source"), filepath.Join(home, "target"), filepath.Join(home, "third")
	out := filepath.Join(home, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	at := func(tpm *swtpmtest.Instance, store string) []string {
		return []string{"--tpm", tpm.Spec(), "--store", store}
	}
	src, dst := at(source, srcStore), at(target, dstStore)
	path := func(name string) string { return filepath.Join(out, name) }

	// The key, age-encrypted to an age identity.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	seed := priv.Seed()
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	wantKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var enc bytes.Buffer
	w, err := age.Encrypt(&enc, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(pem.EncodeToMemory(block))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	idFile, legacy, pass := path("id.txt"), path("legacy.age"), path("pass")
	for name, data := range map[string][]byte{idFile: []byte(id.String() + "\n"), legacy: enc.Bytes(), pass: []byte("correct horse\n")} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	line := func(stdout string) string {
		t.Helper()
		f := strings.Fields(stdout)
		if len(f) < 2 {
			t.Fatalf("no key line in %q", stdout)
		}
		return f[0] + " " + f[1]
	}

	// import, with a backup to the age key
	got := c.ok(append([]string{"import", "work", legacy, "-i", idFile, "--backup", path("work.age"), "--recipient", id.Recipient().String()}, src...)...)
	if line(got) != wantKey {
		t.Fatalf("imported %q; want %q", got, wantKey)
	}
	// a later backup, with a passphrase
	c.ok(append([]string{"backup", "work", "-o", path("work-pass.age"), "--backup-passphrase-file", pass}, src...)...)

	// the blob is damaged, removed, restored from either backup
	blob := filepath.Join(srcStore, "work.sealed")
	if err := os.WriteFile(blob, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := c.run(append([]string{"restore", "work", path("work.age"), "-i", idFile}, src...)...); code == cli.ExitOK || !strings.Contains(stderr, "already exists") {
		t.Fatalf("restore over a damaged blob: exit %d, %s", code, stderr)
	}
	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	if got := c.ok(append([]string{"restore", "work", path("work-pass.age"), "--passphrase-file", pass}, src...)...); line(got) != wantKey {
		t.Fatalf("restored %q", got)
	}
	if got := c.ok(append([]string{"restore", "work2", path("work.age"), "-i", idFile}, src...)...); line(got) != wantKey {
		t.Fatalf("restored %q", got)
	}
	c.ok(append([]string{"check", "work"}, src...)...)

	// migrate to the target; the third TPM cannot import
	c.ok(append([]string{"srk", "-o", path("target.srk")}, dst...)...)
	c.ok(append([]string{"migrate", "work", "--to", path("target.srk"), "-o", path("work.migrate")}, src...)...)
	code, _, stderr := c.run(append([]string{"import-migrated", "work", path("work.migrate")}, at(third, thirdStore)...)...)
	if code == cli.ExitOK || !strings.Contains(stderr, "was made for another TPM") {
		t.Fatalf("import on a third TPM: exit %d, %s", code, stderr)
	}
	if got := c.ok(append([]string{"import-migrated", "work", path("work.migrate")}, dst...)...); line(got) != wantKey {
		t.Fatalf("migrated %q", got)
	}
	if got := c.ok(append([]string{"check", "work"}, dst...)...); !strings.HasPrefix(got, "ok: work unseals") {
		t.Fatalf("check on the target: %q", got)
	}

	roots := []string{home}
	for _, sw := range []*swtpmtest.Instance{source, target, third} {
		roots = append(roots, sw.Dir, sw.StateDir)
	}
	found, n, err := leaktest.Scan(roots, leaktest.Ed25519Secrets(seed))
	if err != nil {
		t.Fatal(err)
	}
	if n < 15 {
		t.Fatalf("scanned only %d files", n)
	}
	for _, f := range found {
		t.Errorf("secret on disk: %v", f)
	}
	t.Logf("scanned %d files: no secret", n)
}

// TestReadSecretLine: a passphrase file's first line, without its line
// ending; a FIFO, a device or an oversized file is refused by name, at
// once.
func TestReadSecretLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ data, want string }{
		{"correct horse\nsecond line\n", "correct horse"},
		{"crlf\r\n", "crlf"},
		{"no newline", "no newline"},
		{"\nfirst line empty", ""},
	} {
		got, err := passphrase("", write("pass", tc.data), false)
		if err != nil || string(got) != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.data, got, err, tc.want)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := write("big", strings.Repeat("x", prompt.MaxSecret+1))
	for path, want := range map[string]error{
		fifo:        safefile.ErrNotRegular,
		"/dev/zero": safefile.ErrNotRegular,
		big:         safefile.ErrTooLarge,
	} {
		_, err := passphrase("", path, false)
		if !errors.Is(err, want) || !strings.HasPrefix(err.Error(), "passphrase file: "+path+": ") {
			t.Errorf("%s: error %v, want %v naming the file", path, err, want)
		}
	}
}
