package attest

import (
	"crypto/ed25519"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func reportResult(t *testing.T) *Result {
	t.Helper()
	id, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		t.Fatal(err)
	}
	return &Result{
		AKName:    []byte{0, 0xb, 1},
		Identity:  id,
		PCRs:      map[int][]byte{16: {0x16}, 7: {0x07}},
		Certified: true, SealedPCRs: []int{7}, SealedPolicyKind: PolicyAuthorizedPCR, SealedPIN: true, SealedPolicyMatches: true,
	}
}

// The text report is what icn-agent verify and attest print, byte for byte.
func TestResultWriteText(t *testing.T) {
	r := reportResult(t)
	fp := ssh.FingerprintSHA256(r.Identity)
	var b strings.Builder
	if err := r.WriteText(&b, "pin it"); err != nil {
		t.Fatal(err)
	}
	want := "ok: evidence verifies\nidentity:   " + fp + "\nAK:         000b01 (NOT pinned: pin it)\n" +
		"PCR 7       07\nPCR 16      16\n" +
		"sealed key: certified; its signed PCR policy with PIN matches the quoted values (it unseals in this state)\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	for _, c := range []struct {
		mutate func(*Result)
		note   string
		want   string
	}{
		{func(r *Result) { r.AKPinned = true }, "pin it", "(pinned)\n"},
		{func(r *Result) {}, "", "(NOT pinned)\n"},
		{func(r *Result) { r.SealedPolicyMatches = false }, "", "its signed PCR policy with PIN does NOT match the quoted values (it no longer unseals)\n"},
		{func(r *Result) { r.Certified = false }, "", "sealed key: not certified\n"},
	} {
		r := reportResult(t)
		c.mutate(r)
		b.Reset()
		r.WriteText(&b, c.note)
		if !strings.Contains(b.String(), c.want) {
			t.Errorf("got\n%s\nwant it to contain %q", b.String(), c.want)
		}
	}
}

func TestVerdictJSON(t *testing.T) {
	r := reportResult(t)
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "ek"}, Issuer: pkix.Name{CommonName: "ca"}}
	v := &AgentVerdict{EK: &VerifiedEK{Certificate: cert}, Result: r}
	got, _ := json.Marshal(VerdictJSON(r.Identity, v, nil))
	want := `{"ok":true,"identity":"` + ssh.FingerprintSHA256(r.Identity) + `","ek_subject":"CN=ek","ek_issuer":"CN=ca","ak_name":"000b01",` +
		`"certified":true,"policy":"signed PCR policy with PIN","sealed_policy_matches":true,"pcrs":["7=07"]}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	var b strings.Builder
	v.WriteText(&b)
	if !strings.HasPrefix(b.String(), "ok: the EK certificate of \"CN=ek\" chains to a trusted root (issuer \"CN=ca\")\nok: the attestation key 000b01 lives in that TPM (credential activated)\nok: evidence verifies\n") {
		t.Errorf("WriteText:\n%s", b.String())
	}
	r.SealedPolicyMatches = false
	if v.OK() || VerdictJSON(r.Identity, v, nil).OK {
		t.Error("a policy that does not match is OK")
	}
	got, _ = json.Marshal(VerdictJSON(r.Identity, nil, errors.New("no")))
	if string(got) != `{"ok":false,"error":"no","identity":"`+ssh.FingerprintSHA256(r.Identity)+`","certified":false,"sealed_policy_matches":false}` {
		t.Errorf("on error: %s", got)
	}
}

func TestExportTPM2Tools(t *testing.T) {
	e := loadGoldenKind(t, "pcr")
	pub, err := os.ReadFile(goldenKindPath("pcr", "pub"))
	if err != nil {
		t.Fatal(err)
	}
	id, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	nonce := readHexFile(t, goldenKindPath("pcr", "nonce"))
	dir := filepath.Join(t.TempDir(), "a dir", "tt")
	cmd, err := e.ExportTPM2Tools(dir, nonce, id)
	if err != nil {
		t.Fatal(err)
	}
	q, err := os.ReadFile(filepath.Join(dir, TPM2ToolsQualification))
	if err != nil {
		t.Fatal(err)
	}
	if want := TPM2ToolsCommand(dir, strings.TrimSpace(string(q))); cmd != want || !strings.Contains(cmd, "'") {
		t.Errorf("command %q, want %q", cmd, want)
	}
	for _, f := range []string{TPM2ToolsMessage, TPM2ToolsSignature, TPM2ToolsPCRs, TPM2ToolsAKPEM} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir: %v %v", fi.Mode(), err)
	}
	if _, err := e.ExportTPM2Tools(filepath.Join(dir, TPM2ToolsMessage, "x"), nonce, id); err == nil {
		t.Error("a file in the way: no error")
	}
}
