package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
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
			got, err := readPCRValuesFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || sealstore.FormatPCRValues(got, " ") != tt.want {
				t.Fatalf("readPCRValuesFile = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// explainUnseal must keep the sentinels it adds advice to.
func TestExplainUnsealKeepsSentinels(t *testing.T) {
	b := &sealstore.Blob{Name: "x", Policy: sealstore.Policy{PCRs: []sealstore.PCRValue{{Index: 0}, {Index: 7}}}}
	for _, sentinel := range []error{tpmseal.ErrWrongPIN, tpmseal.ErrLockout, sealstore.ErrNoSignedPolicy, tpmseal.ErrPCRMismatch} {
		var in error
		switch sentinel {
		case sealstore.ErrNoSignedPolicy:
			in = &sealstore.MissingPolicyError{Name: "x", KeyID: "k"}
		case tpmseal.ErrPCRMismatch:
			in = &tpmseal.PCRMismatchError{Name: "x", PCRs: []int{7}}
		default:
			in = sentinel
		}
		if err := explainUnseal(context.Background(), failingTPM{}, nil, b, in); !errors.Is(err, sentinel) {
			t.Errorf("explainUnseal(%v) = %v: lost the sentinel", in, err)
		}
	}
}

// failingTPM is a tpmseal.TPM whose every use fails.
type failingTPM struct{}

func (failingTPM) RunWithSRK(context.Context, func(transport.TPM, *tpmdev.SRK) error) error {
	return errors.New("no TPM")
}
