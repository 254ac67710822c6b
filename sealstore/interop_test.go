package sealstore_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// A blob's TPM part is the standard TPM2B_PUBLIC and TPM2B_PRIVATE under
// the TCG ECC SRK, so tpm2-tools can load and unseal it on its own: the
// emergency path that needs nothing of icn-agent.
func TestTPM2ToolsUnsealsBlob(t *testing.T) {
	f := newFixture(t, "swtpm", nil)
	seed := randomSeed(t)
	b, err := sealstore.Seal(context.Background(), f.tpm, seed, sealstore.SealOptions{Name: "work"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub, priv := filepath.Join(dir, "work.pub"), filepath.Join(dir, "work.priv")
	if err := os.WriteFile(pub, b.Public, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(priv, b.Private, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), f.sw.Env()...)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("%v: %v\n%s", args, err, stderr)
		}
		return out
	}
	// Make our SRK persistent at the TCG handle, as a provisioned machine
	// has it, and let the tools find it there.
	err = f.tpm.RunWithSRK(context.Background(), func(tpm transport.TPM, srk *tpmdev.SRK) error {
		_, err := tpm2.EvictControl{
			Auth:             tpm2.TPMRHOwner,
			ObjectHandle:     &tpm2.NamedHandle{Handle: srk.Handle, Name: srk.Name},
			PersistentHandle: tpmdev.PersistentSRK,
		}.Execute(tpm)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	f.tpm.Close() // swtpm has no resource manager and three object slots
	run("tpm2_load", "-Q", "-C", "0x81000001", "-u", "work.pub", "-r", "work.priv", "-c", "work.ctx")
	run("tpm2_flushcontext", "-t")
	run("tpm2_startauthsession", "-Q", "--policy-session", "-S", "session.ctx")
	run("tpm2_policypcr", "-Q", "-S", "session.ctx", "-l", "sha256:0,7")
	got := run("tpm2_unseal", "-c", "work.ctx", "-p", "session:session.ctx")
	run("tpm2_flushcontext", "session.ctx")
	run("tpm2_flushcontext", "-t")
	if !bytes.Equal(got, seed) {
		t.Fatalf("tpm2_unseal returned %d bytes that are not the seed", len(got))
	}
}
