package tpmpolicy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func cc(c tpm2.TPMCC) []byte { return binary.BigEndian.AppendUint32(nil, uint32(c)) }

func sum(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// The digests follow the formulas of TPM 2.0 Part 3, written out here
// byte by byte, independently of go-tpm's policy calculator.
func TestDigestsByHand(t *testing.T) {
	zero := make([]byte, 32)
	v0, v7 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{7}, 32)
	got, err := PCR(tpm2.TPMAlgSHA256, []int{0, 7}, [][]byte{v0, v7})
	if err != nil {
		t.Fatal(err)
	}
	// TPML_PCR_SELECTION: count 1, hash SHA-256, sizeofSelect 3, bitmap.
	sel := []byte{0, 0, 0, 1, 0, 0x0b, 3, 0x81, 0, 0}
	if want := sum(zero, cc(tpm2.TPMCCPolicyPCR), sel, sum(v0, v7)); !bytes.Equal(got, want) {
		t.Errorf("PolicyPCR %x, want %x", got, want)
	}
	if want := sum(got, cc(tpm2.TPMCCPolicyAuthValue)); !bytes.Equal(AuthValue(got), want) {
		t.Errorf("PolicyAuthValue %x, want %x", AuthValue(got), want)
	}
	name := append([]byte{0, 0x0b}, bytes.Repeat([]byte{9}, 32)...)
	auth, err := Authorize(name)
	if err != nil {
		t.Fatal(err)
	}
	if want := sum(sum(zero, cc(tpm2.TPMCCPolicyAuthorize), name)); !bytes.Equal(auth, want) {
		t.Errorf("PolicyAuthorize %x, want %x", auth, want)
	}
	if sealed, _ := Sealed(KindAuthorizedPCR, nil, name, true); !bytes.Equal(sealed, AuthValue(auth)) {
		t.Error("Sealed(authorized, pin) is not PolicyAuthorize then PolicyAuthValue")
	}
	if sealed, _ := Sealed(KindPCR, got, nil, false); !bytes.Equal(sealed, got) {
		t.Error("Sealed(pcr) is not the PolicyPCR digest")
	}
	if !bytes.Equal(ApprovalHash(got), sum(got)) {
		t.Error("ApprovalHash is not SHA-256 of the approved digest")
	}
}

func TestRefusals(t *testing.T) {
	v := make([]byte, 32)
	for _, tc := range []struct {
		name    string
		indexes []int
		values  [][]byte
	}{
		{"none", nil, nil},
		{"unsorted", []int{7, 0}, [][]byte{v, v}},
		{"duplicate", []int{7, 7}, [][]byte{v, v}},
		{"out of range", []int{24}, [][]byte{v}},
		{"short value", []int{0}, [][]byte{v[:31]}},
		{"count mismatch", []int{0, 7}, [][]byte{v}},
	} {
		if _, err := PCR(tpm2.TPMAlgSHA256, tc.indexes, tc.values); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := Authorize([]byte{1, 2}); err == nil {
		t.Error("Authorize accepted a short name")
	}
	if _, err := Sealed(Kind(9), nil, nil, false); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("Sealed(9): %v", err)
	}
}

// The PolicyPCR digest over SHA-256 PCRs 0 and 7, both all-zero, as a TPM
// computed it (testdata/policy/pcr-0-7-zero.hex at the top of the module;
// sealstore checks the same vector against the simulator).
func TestPCRGoldenVector(t *testing.T) {
	data, err := os.ReadFile("../../testdata/policy/pcr-0-7-zero.hex")
	if err != nil {
		t.Fatal(err)
	}
	want, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, sha256.Size)
	got, err := PCR(tpm2.TPMAlgSHA256, []int{0, 7}, [][]byte{zero, zero})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("PolicyPCR digest %x, want the TPM's %x", got, want)
	}
}
