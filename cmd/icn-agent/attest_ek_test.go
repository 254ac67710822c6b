package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icn/icn-agent/internal/swtpmtest"
)

// TestAttestEKRooted runs icn-agent attest, as a verifier that has never
// seen the machine would, against an agent on a swtpm manufactured with an
// EK certificate from a local CA: it passes with that CA's bundle and
// fails with another CA's, and with the simulator (no EK certificate) it
// says so.
func TestAttestEKRooted(t *testing.T) {
	m := swtpmtest.Manufacture(t)
	other := swtpmtest.Manufacture(t) // a CA that issued nothing this TPM has
	sw := swtpmtest.StartWithState(t, m.StateDir)
	d := newDaemonEnv(t, sw.Spec())
	d.run(t, "keygen", "work")
	p := d.serve(t, 1)
	bundle := func(name string, files ...string) string {
		var b []byte
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, data...)
		}
		path := filepath.Join(d.dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	attest := func(args ...string) (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, d.bin, append([]string{"attest", "-a", p.sock}, args...)...)
		cmd.Env = d.env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	out, errOut, err := attest("work", "--ek-roots", bundle("trusted.pem", m.RootCA, m.IssuerCA))
	if err != nil {
		t.Fatalf("attest with the issuing CA: %v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{"chains to a trusted root", "credential activated", "ok: evidence verifies", "(pinned)", "PCR policy matches the quoted values"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = attest("work", "--json", "--ek-roots", bundle("trusted.pem", m.RootCA, m.IssuerCA))
	var j attestJSON
	if err != nil || json.Unmarshal([]byte(out), &j) != nil || !j.OK || !j.SealedPolicyMatches || j.AKName == "" {
		t.Errorf("attest --json: %v\n%s", err, out)
	}

	out, errOut, err = attest("work", "--ek-roots", bundle("other.pem", other.RootCA, other.IssuerCA))
	if err == nil || !strings.Contains(errOut, "endorsement key certificate is not trusted") {
		t.Errorf("attest with another CA: %v\n%s%s", err, out, errOut)
	}
	out, _, err = attest("work", "--json", "--ek-roots", bundle("other.pem", other.RootCA, other.IssuerCA))
	if err == nil || json.Unmarshal([]byte(out), &j) != nil || j.OK || !strings.Contains(j.Error, "not trusted") {
		t.Errorf("attest --json with another CA: %v\n%s", err, out)
	}
}

// The simulator has no EK certificate: attest says so and fails.
func TestAttestNoEKCertificate(t *testing.T) {
	m := swtpmtest.Manufacture(t) // only for a CA bundle
	d := newDaemonEnv(t, "sim")
	d.run(t, "keygen", "work")
	p := d.serve(t, 1)
	cmd := exec.Command(d.bin, "attest", "-a", p.sock, "work", "--ek-roots", m.RootCA)
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the TPM has no endorsement key certificate") {
		t.Errorf("attest on the simulator: %v\n%s", err, out)
	}
}
