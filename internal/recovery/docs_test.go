package recovery

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/recovery/leaktest"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// emergencyScript returns the shell script of docs/recovery.md that the
// emergency-unseal marker precedes.
func emergencyScript(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/recovery.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- emergency-unseal:")
	if !ok {
		t.Fatal("docs/recovery.md has no emergency-unseal marker")
	}
	_, after, ok = strings.Cut(after, "```sh\n")
	if !ok {
		t.Fatal("no sh block after the emergency-unseal marker")
	}
	script, _, ok := strings.Cut(after, "```\n")
	if !ok {
		t.Fatal("the emergency-unseal block does not end")
	}
	return script
}

// The emergency procedure of docs/recovery.md, run as written with only
// bash, coreutils, tpm2-tools and ssh-keygen, turns a blob into the
// identity's OpenSSH private key, on a TPM where icn-agent's SRK is not
// persistent.
func TestEmergencyProcedure(t *testing.T) {
	for _, tool := range []string{"bash", "tpm2_createprimary", "tpm2_unseal", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: apt-get install tpm2-tools openssh-client", tool)
		}
	}
	tpm := newTPM(t, "swtpm")
	home := t.TempDir()
	dataHome := filepath.Join(home, "data")
	store, err := sealstore.Open(filepath.Join(dataHome, "icn-agent", "identities"))
	if err != nil {
		t.Fatal(err)
	}
	seed := randomSeed(t)
	b, err := tpmseal.Seal(context.Background(), tpm, seed, tpmseal.SealOptions{Name: "work", PCRs: []int{0, 7, 16}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Create(b); err != nil {
		t.Fatal(err)
	}
	tpm.Close() // flush our SRK: swtpm has three object slots

	// The procedure writes the key to tmpfs, as a user's would.
	runtime, err := os.MkdirTemp("/dev/shm", "icn-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runtime) })
	cmd := exec.Command("bash", "-c", emergencyScript(t))
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+dataHome, "XDG_RUNTIME_DIR="+runtime)
	cmd.Env = append(cmd.Env, tpm.sw.Env()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the emergency procedure failed: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("output %q", stdout.String())
	}
	keyPath := lines[len(lines)-1]
	if !strings.HasPrefix(keyPath, runtime+"/") {
		t.Fatalf("key written to %s, not to the tmpfs runtime directory", keyPath)
	}
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(b.PublicKey)))
	if got := lines[len(lines)-2]; !strings.HasPrefix(got, want+" ") {
		t.Fatalf("ssh-keygen -y printed %q; want %q", got, want)
	}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	priv, ok := key.(*ed25519.PrivateKey)
	if !ok || !bytes.Equal(priv.Seed(), seed) {
		t.Fatalf("the key is %T, not the sealed seed", key)
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// What the procedure leaves besides the key holds no secret, and
	// nothing reached the disk-backed directories.
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	found, n, err := leaktest.Scan([]string{runtime, home, tpm.sw.StateDir}, leaktest.Ed25519Secrets(seed))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("secret left behind: %v", f)
	}
	if n < 5 {
		t.Fatalf("scanned only %d files", n)
	}
}
