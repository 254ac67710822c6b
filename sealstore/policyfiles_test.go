package sealstore_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/icn/icn-agent/sealstore"
)

func TestReadPCRValuesFile(t *testing.T) {
	dir := t.TempDir()
	v0 := strings.Repeat("00", 32)
	v7 := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		content string
		want    string // FormatPCRValues, or "" for an error
		wantErr string
	}{
		{"N=HEX", "7=" + v7 + "\n0=" + v0 + "\n", "0=" + v0 + " 7=" + v7, ""},
		{"comments and blanks", "# firmware 2\n\n0=" + v0 + "\n  7 = " + v7 + "  \n", "0=" + v0 + " 7=" + v7, ""},
		{"tpm2_pcrread", "sha256:\n  0 : 0x" + strings.ToUpper(v0) + "\n  7 : 0x" + strings.ToUpper(v7) + "\n", "0=" + v0 + " 7=" + v7, ""},
		{"empty", "\n# nothing\n", "", "has no PCR values"},
		{"twice", "7=" + v7 + "\n7=" + v7 + "\n", "", ":2: PCR 7 given twice"},
		{"pcr 24", "24=" + v7, "", ":1: want N=HEX with N a PCR 0-23"},
		{"short", "7=abcd", "", ":1: PCR 7: want 64 hex digits"},
		{"garbage", "hello", "", `:1: want N=HEX`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := sealstore.ReadPCRValuesFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), path) {
					t.Fatalf("error %v, want it to name %s and contain %q", err, path, tt.wantErr)
				}
				if !errors.Is(err, sealstore.ErrPCRValues) {
					t.Fatalf("error %v does not wrap ErrPCRValues", err)
				}
				return
			}
			if err != nil || sealstore.FormatPCRValues(got, " ") != tt.want {
				t.Fatalf("ReadPCRValuesFile = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// A policy key made by NewPolicySigningKey reads back through both
// readers, and each refuses the other half with its sentinel.
func TestPolicyKeyFiles(t *testing.T) {
	dir := t.TempDir()
	key, privPEM, err := sealstore.NewPolicySigningKey()
	if err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(dir, "key")
	pub := filepath.Join(dir, "key.pub")
	write := func(path string, data []byte) string {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write(priv, privPEM)
	write(pub, key.PEM())

	got, err := sealstore.ReadPolicyKeyFile(pub)
	if err != nil || got.ID() != key.ID() {
		t.Fatalf("ReadPolicyKeyFile = %v, %v; want key %s", got, err, key.ID())
	}
	signer, err := sealstore.ReadPolicySigningKeyFile(priv)
	if err != nil || !signer.PublicKey.Equal(key.Public) {
		t.Fatalf("ReadPolicySigningKeyFile = %v, %v", signer, err)
	}
	// SEC 1 encoding of the same key.
	der, err := x509.MarshalECPrivateKey(signer)
	if err != nil {
		t.Fatal(err)
	}
	sec1 := write(filepath.Join(dir, "sec1"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if k, err := sealstore.ReadPolicySigningKeyFile(sec1); err != nil || !k.Equal(signer) {
		t.Fatalf("SEC 1 key: %v, %v", k, err)
	}

	for _, tc := range []struct {
		read func(string) error
		path string
		want error
	}{
		{func(p string) error { _, err := sealstore.ReadPolicyKeyFile(p); return err }, priv, sealstore.ErrPrivatePolicyKey},
		{func(p string) error { _, err := sealstore.ReadPolicyKeyFile(p); return err }, write(filepath.Join(dir, "junk"), []byte("junk")), sealstore.ErrNotPolicyKey},
		{func(p string) error { _, err := sealstore.ReadPolicySigningKeyFile(p); return err }, pub, sealstore.ErrPublicPolicyKey},
		{func(p string) error { _, err := sealstore.ReadPolicySigningKeyFile(p); return err }, filepath.Join(dir, "junk"), sealstore.ErrNoPEM},
	} {
		err := tc.read(tc.path)
		if !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), tc.path) {
			t.Errorf("%s: error %v, want %v naming the file", tc.path, err, tc.want)
		}
	}
	var _ *ecdsa.PrivateKey = signer
}
