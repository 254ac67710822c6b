package attesttpm

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
)

// TestTPM2ToolsCheckquote has tpm2-tools' tpm2_checkquote, an independent
// implementation, verify quotes written by WriteTPM2Tools: the golden
// evidence, and fresh ones with enough PCRs to need several TPML_DIGESTs.
func TestTPM2ToolsCheckquote(t *testing.T) {
	if _, err := exec.LookPath("tpm2_checkquote"); err != nil {
		t.Fatalf("tpm2_checkquote not installed: apt-get install tpm2-tools (%v)", err)
	}
	golden, nonce := goldenEvidence(t)
	cases := []struct {
		name  string
		e     *attest.Evidence
		nonce []byte
	}{{"golden", golden, nonce}}

	f := newFixture(t, "sim")
	id := f.seal("work", []int{0, 7})
	ak := f.ak("")
	for _, extra := range [][]int{nil, {1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}} {
		f.extend(16)
		nonce := newNonce(t)
		e, err := ak.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{Nonce: nonce, ExtraPCRs: extra, Sign: seedSigner(id.seed)})
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name  string
			e     *attest.Evidence
			nonce []byte
		}{name: fmt.Sprintf("%d-pcrs", len(e.PCRs)), e: e, nonce: nonce})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.e.WriteTPM2Tools(dir); err != nil {
				t.Fatal(err)
			}
			key, err := ssh.ParsePublicKey(tc.e.IdentityKey)
			if err != nil {
				t.Fatal(err)
			}
			binding := attest.Binding(tc.nonce, key)
			checkquote := func(qualification []byte, pcrsFile string) ([]byte, error) {
				cmd := exec.Command("tpm2_checkquote",
					"-u", filepath.Join(dir, attest.TPM2ToolsAKPEM),
					"-m", filepath.Join(dir, attest.TPM2ToolsMessage),
					"-s", filepath.Join(dir, attest.TPM2ToolsSignature),
					"-f", pcrsFile,
					"-g", "sha256",
					"-q", hex.EncodeToString(qualification))
				return cmd.CombinedOutput()
			}
			pcrs := filepath.Join(dir, attest.TPM2ToolsPCRs)
			if out, err := checkquote(binding, pcrs); err != nil {
				t.Fatalf("tpm2_checkquote refused the quote: %v\n%s", err, out)
			}
			// The command TPM2ToolsCommand prints, with the -q value
			// WriteTPM2ToolsQualification writes, run as a user would.
			q, err := attest.WriteTPM2ToolsQualification(dir, tc.nonce, key)
			if err != nil {
				t.Fatal(err)
			}
			if data, err := os.ReadFile(filepath.Join(dir, attest.TPM2ToolsQualification)); err != nil || string(data) != q+"\n" {
				t.Fatalf("quote.qualification holds %q, %v; want %q", data, err, q)
			}
			if out, err := exec.Command("sh", "-c", attest.TPM2ToolsCommand(dir, q)).CombinedOutput(); err != nil {
				t.Fatalf("the printed tpm2_checkquote command failed: %v\n%s", err, out)
			}
			// The raw nonce is not the qualification: Binding is.
			if out, err := checkquote(tc.nonce, pcrs); err == nil {
				t.Fatalf("tpm2_checkquote accepted the raw nonce as qualification:\n%s", out)
			}
			wrong := bytes.Clone(binding)
			wrong[0] ^= 1
			if out, err := checkquote(wrong, pcrs); err == nil {
				t.Fatalf("tpm2_checkquote accepted a tampered qualification:\n%s", out)
			}
			// A tampered PCR value fails the digest check.
			data, err := os.ReadFile(pcrs)
			if err != nil {
				t.Fatal(err)
			}
			data[132+4+4+2] ^= 1 // first byte of the first PCR value
			bad := filepath.Join(dir, "bad.pcrs")
			if err := os.WriteFile(bad, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := checkquote(binding, bad); err == nil {
				t.Fatalf("tpm2_checkquote accepted a tampered PCR value:\n%s", out)
			}
		})
	}
}

// goldenEvidence returns attest's version 1 golden evidence and its nonce.
func goldenEvidence(t testing.TB) (*attest.Evidence, []byte) {
	t.Helper()
	js, err := os.ReadFile("../../testdata/evidence/v1.json")
	if err != nil {
		t.Fatal(err)
	}
	e := new(attest.Evidence)
	if err := json.Unmarshal(js, e); err != nil {
		t.Fatal(err)
	}
	h, err := os.ReadFile("../../testdata/evidence/v1.nonce")
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	return e, nonce
}
