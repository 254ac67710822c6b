package swtpmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Manufactured is a TPM state made by swtpm_setup with endorsement key
// certificates issued by a local CA, as a TPM maker would issue them.
type Manufactured struct {
	// StateDir is the TPM state; start it with StartWithState.
	StateDir string
	// RootCA is the PEM file of the CA's root certificate.
	RootCA string
	// IssuerCA is the PEM file of the intermediate that signed the EK
	// certificates.
	IssuerCA string
}

// Manufacture runs swtpm_setup with swtpm_localca in a temporary directory:
// a TPM 2.0 state with an RSA-2048 EK persisted at 0x81010001 and its
// certificate in NV index 0x01c00002 (and an ECC NIST P-384 EK and
// certificate at 0x81010016 and 0x01c00016), issued by a fresh local CA
// whose root and intermediate certificates it returns. Every call makes a
// new CA. It takes about a second.
func Manufacture(t testing.TB) *Manufactured {
	t.Helper()
	for _, tool := range []string{"swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("swtpmtest: %s not installed: apt-get install swtpm-tools (%v)", tool, err)
		}
	}
	dir := socketDir(t)
	state, ca := filepath.Join(dir, "state"), filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caConf := write("localca.conf", fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
		ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")))
	caOpts := write("localca.options", "")
	setupConf := write("setup.conf", fmt.Sprintf("create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\n", caConf, caOpts))
	cmd := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert", "--config", setupConf, "--overwrite")
	// swtpm_setup looks for its own configuration under XDG_CONFIG_HOME
	// and HOME first: keep the user's out of it.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("swtpmtest: swtpm_setup: %v\n%s", err, out)
	}
	m := &Manufactured{
		StateDir: state,
		RootCA:   filepath.Join(ca, "swtpm-localca-rootca-cert.pem"),
		IssuerCA: filepath.Join(ca, "issuercert.pem"),
	}
	for _, f := range []string{m.RootCA, m.IssuerCA} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("swtpmtest: swtpm_setup made no %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
	if !strings.Contains(string(out), "EK certificate") {
		t.Fatalf("swtpmtest: swtpm_setup did not report an EK certificate:\n%s", out)
	}
	return m
}
