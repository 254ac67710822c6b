package tpmseal_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// A blob's TPM part is the standard TPM2B_PUBLIC and TPM2B_PRIVATE under
// the TCG ECC SRK, so tpm2-tools can load and unseal it on its own: the
// emergency path that needs nothing of icn-agent.
func TestTPM2ToolsUnsealsBlob(t *testing.T) {
	f := newFixture(t, "swtpm", nil)
	seed := randomSeed(t)
	b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "work"})
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

// A signed-policy, PIN-protected blob is made of standard TPM parts too:
// tpm2-tools loads the policy key (the blob's TPM2B_PUBLIC), verifies the
// signed policy into a ticket, runs PolicyPCR, PolicyAuthorize and
// PolicyAuthValue, and unseals with the PIN's authValue.
func TestTPM2ToolsUnsealsSignedPINBlob(t *testing.T) {
	f := newFixture(t, "swtpm", nil)
	seed := randomSeed(t)
	key := newPolicyKey(t)
	pin := []byte("tools pin")
	b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "work", Signer: &key.PublicKey, PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	p := sign(t, key, f.readPCRs(0, 7), "")
	sig := tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: p.R}, SignatureS: tpm2.TPM2BECCParameter{Buffer: p.S},
		}),
	})
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"sealed.pub": b.Public, "sealed.priv": b.Private, "key.pub": b.Policy.Signer, "approved.bin": p.Digest, "sig.bin": sig,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
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
	f.tpm.Close()
	run("tpm2_load", "-Q", "-C", "0x81000001", "-u", "sealed.pub", "-r", "sealed.priv", "-c", "sealed.ctx")
	run("tpm2_flushcontext", "-t")
	run("tpm2_loadexternal", "-Q", "-C", "o", "-u", "key.pub", "-c", "key.ctx", "-n", "key.name")
	if name, err := os.ReadFile(filepath.Join(dir, "key.name")); err != nil || !bytes.Equal(name, p.Key.Name) {
		t.Fatalf("tpm2_loadexternal names the key %x, sealstore %x (%v)", name, p.Key.Name, err)
	}
	run("tpm2_verifysignature", "-Q", "-c", "key.ctx", "-g", "sha256", "-m", "approved.bin", "-s", "sig.bin", "-t", "ticket.bin")
	run("tpm2_flushcontext", "-t")
	run("tpm2_startauthsession", "-Q", "--policy-session", "-S", "session.ctx")
	run("tpm2_policypcr", "-Q", "-S", "session.ctx", "-l", "sha256:0,7")
	run("tpm2_policyauthorize", "-Q", "-S", "session.ctx", "-i", "approved.bin", "-n", "key.name", "-t", "ticket.bin")
	run("tpm2_policyauthvalue", "-Q", "-S", "session.ctx")
	got := run("tpm2_unseal", "-c", "sealed.ctx", "-p", "session:session.ctx+hex:"+hex.EncodeToString(tpmseal.PINAuthValue(pin)))
	run("tpm2_flushcontext", "session.ctx")
	run("tpm2_flushcontext", "-t")
	if !bytes.Equal(got, seed) {
		t.Fatalf("tpm2_unseal returned %d bytes that are not the seed", len(got))
	}
}
