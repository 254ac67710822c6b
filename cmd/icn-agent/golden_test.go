package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/icn/icn-agent/internal/swtpmtest"

	"github.com/icn/icn-agent/internal/cli"
)

// icn-agent verify accepts the golden evidence of every kind (the
// module's testdata/evidence, made by internal/attesttpm on the
// simulator and checked by attest's own tests) with the verifier's
// inputs beside it, and refuses it for another nonce.
func TestVerifyGoldenEvidence(t *testing.T) {
	for _, kind := range []string{"v1", "v2-pcr", "v2-pcr-pin", "v2-signed", "v2-signed-pin"} {
		t.Run(kind, func(t *testing.T) {
			path := "../../testdata/evidence/" + kind
			read := func(ext string) string {
				data, err := os.ReadFile(path + "." + ext)
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(data))
			}
			nonce := read("nonce")
			verify := func(nonce string) (int, string, string) {
				var stdout, stderr bytes.Buffer
				e := &cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
				code := commands.Run([]string{"verify", path + ".json", "--nonce", nonce, "--ak-name", read("ak-name"), "--key", path + ".pub"}, e)
				return code, stdout.String(), stderr.String()
			}
			if code, out, errOut := verify(nonce); code != cli.ExitOK || !strings.HasPrefix(out, "ok: evidence verifies\n") || !strings.Contains(out, read("ak-name")+" (pinned)") {
				t.Fatalf("verify exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			other := strings.Repeat("00", len(nonce)/2)
			if code, _, errOut := verify(other); code == cli.ExitOK || !strings.Contains(errOut, "nonce") {
				t.Fatalf("verify with another nonce exited %d: %s", code, errOut)
			}
		})
	}
}

// icn-agent pubkey reads the golden blobs of every policy kind (the
// module's testdata/blobs, which sealstore's tests unseal) and prints
// the public key line committed beside each.
func TestPubkeyGoldenBlobs(t *testing.T) {
	config := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(config, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"work", "pin", "signed"} {
		want, err := os.ReadFile("../../testdata/blobs/" + name + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		e := &cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
		if code := commands.Run([]string{"pubkey", name, "--store", "../../testdata/blobs", "--config", config}, e); code != cli.ExitOK || stdout.String() != string(want) {
			t.Fatalf("pubkey %s exited %d: %q, want %q (%s)", name, code, stdout.String(), want, stderr.String())
		}
	}
}

// icn-agent restore seals the golden backup (the module's testdata/backup,
// written by internal/recovery and read by its tests) to a TPM, under the
// public key committed beside it, and the identity unseals.
func TestRestoreGoldenBackup(t *testing.T) {
	home := t.TempDir()
	c := &inProcess{t: t, config: filepath.Join(home, "config.toml")}
	if err := os.WriteFile(c.config, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	at := []string{"--tpm", swtpmtest.Start(t).Spec(), "--store", filepath.Join(home, "store")}
	c.ok(append([]string{"restore", "work", "../../testdata/backup/work.age", "-i", "../../testdata/backup/backup.key"}, at...)...)
	want, err := os.ReadFile("../../testdata/backup/work.pub")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ok(append([]string{"pubkey", "work"}, at...)...); got != string(want) {
		t.Fatalf("restored %q, want %q", got, want)
	}
	c.ok(append([]string{"check", "work"}, at...)...)
}
