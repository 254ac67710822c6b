package sealstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// goldenPolicyPCR07Zero is the file holding the PolicyPCR digest over
// SHA-256 PCRs 0 and 7 both all-zero, as computed by the TPM simulator.
const goldenPolicyPCR07Zero = "../testdata/policy/pcr-0-7-zero.hex"

func readGolden(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func TestSelection(t *testing.T) {
	tests := []struct {
		indexes []int
		want    []byte
	}{
		{nil, []byte{0, 0, 0}},
		{[]int{0}, []byte{0x01, 0, 0}},
		{[]int{0, 7}, []byte{0x81, 0, 0}},
		{[]int{8, 16, 23}, []byte{0, 0x01, 0x81}},
		{[]int{7, 0, 7}, []byte{0x81, 0, 0}},
		{[]int{-1, 24, 1000, 1}, []byte{0x02, 0, 0}},
	}
	for _, tt := range tests {
		got := tpmdev.Selection(tpm2.TPMAlgSHA256, tt.indexes)
		want := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tt.want}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("PCRSelection(%v) = %+v, want %+v", tt.indexes, got, want)
		}
	}
	// Wire form: count 1, hash 0x000B, sizeofSelect 3, bitmap.
	wire := tpm2.Marshal(tpmdev.Selection(tpm2.TPMAlgSHA256, []int{0, 7}))
	if want := []byte{0, 0, 0, 1, 0x00, 0x0b, 3, 0x81, 0, 0}; !bytes.Equal(wire, want) {
		t.Errorf("marshalled selection %x, want %x", wire, want)
	}
}

// specPolicyPCR computes the PolicyPCR digest directly from TPM 2.0 Part 3,
// section 23.7, without the go-tpm policy calculator.
func specPolicyPCR(pcrs []PCRValue) []byte {
	values := sha256.New()
	var bitmap [3]byte
	for _, p := range pcrs {
		values.Write(p.Value)
		bitmap[p.Index/8] |= 1 << (p.Index % 8)
	}
	h := sha256.New()
	h.Write(make([]byte, 32))                          // policyDigest_old
	h.Write(binary.BigEndian.AppendUint32(nil, 0x17f)) // TPM_CC_PolicyPCR
	h.Write([]byte{0, 0, 0, 1, 0x00, 0x0b, 3})         // TPML_PCR_SELECTION header
	h.Write(bitmap[:])
	h.Write(values.Sum(nil))
	return h.Sum(nil)
}

func TestPolicyPCRDigest(t *testing.T) {
	zero := make([]byte, 32)
	tests := []struct {
		name string
		pcrs []PCRValue
	}{
		{"0 and 7 zero", []PCRValue{{0, zero}, {7, zero}}},
		{"one", testPCRs(testRand("one"), 16)},
		{"several", testPCRs(testRand("several"), 0, 1, 2, 3, 7, 8, 15, 23)},
		{"all", testPCRs(testRand("all"), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PolicyPCRDigest(tpm2.TPMAlgSHA256, tt.pcrs)
			if err != nil {
				t.Fatal(err)
			}
			if want := specPolicyPCR(tt.pcrs); !bytes.Equal(got, want) {
				t.Errorf("PolicyPCRDigest = %x, want %x", got, want)
			}
		})
	}
}

func TestPolicyPCRDigestKnownAnswer(t *testing.T) {
	zero := make([]byte, 32)
	got, err := PolicyPCRDigest(tpm2.TPMAlgSHA256, []PCRValue{{0, zero}, {7, zero}})
	if err != nil {
		t.Fatal(err)
	}
	if want := readGolden(t, goldenPolicyPCR07Zero); !bytes.Equal(got, want) {
		t.Errorf("PolicyPCRDigest(PCR 0, 7 zero) = %x, want %x", got, want)
	}
}

func TestPolicyPCRDigestErrors(t *testing.T) {
	v := make([]byte, 32)
	tests := []struct {
		name    string
		bank    tpm2.TPMIAlgHash
		pcrs    []PCRValue
		wantErr string
	}{
		{"unknown bank", tpm2.TPMAlgSM3256, []PCRValue{{0, v}}, "unsupported pcr bank 0x0012"},
		{"null bank", tpm2.TPMAlgNull, []PCRValue{{0, v}}, "unsupported pcr bank 0x0010"},
		{"no pcrs", tpm2.TPMAlgSHA256, nil, "want 1 to 24 pcrs, got 0"},
		{"too many", tpm2.TPMAlgSHA256, make([]PCRValue, 25), "want 1 to 24 pcrs, got 25"},
		{"negative", tpm2.TPMAlgSHA256, []PCRValue{{-1, v}}, "pcr index -1 out of range 0 to 23"},
		{"24", tpm2.TPMAlgSHA256, []PCRValue{{24, v}}, "pcr index 24 out of range 0 to 23"},
		{"unsorted", tpm2.TPMAlgSHA256, []PCRValue{{7, v}, {0, v}}, "pcr index 0 after 7"},
		{"duplicate", tpm2.TPMAlgSHA256, []PCRValue{{7, v}, {7, v}}, "pcr index 7 after 7"},
		{"short value", tpm2.TPMAlgSHA256, []PCRValue{{7, v[:20]}}, "pcr 7 value: want 32 bytes, got 20"},
		{"sha1 size in sha384 bank", tpm2.TPMAlgSHA384, []PCRValue{{7, v}}, "pcr 7 value: want 48 bytes, got 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := PolicyPCRDigest(tt.bank, tt.pcrs)
			if err == nil {
				t.Fatalf("PolicyPCRDigest = %x, want error", d)
			}
			if !strings.HasPrefix(err.Error(), "sealstore: policy pcr: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// openSimulator starts the in-process TPM simulator, freshly manufactured.
// There is one simulator per process: tests using it must not be parallel.
func openSimulator(t *testing.T) transport.TPM {
	t.Helper()
	tpm, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatalf("open TPM simulator: %v", err)
	}
	t.Cleanup(func() {
		if err := tpm.Close(); err != nil {
			t.Errorf("close TPM simulator: %v", err)
		}
	})
	return tpm
}

// tpmPolicyPCR runs TPM2_PolicyPCR over the given SHA-256 PCRs in a trial
// session, letting the TPM use the PCRs' current values, and returns the
// session's policy digest.
func tpmPolicyPCR(t *testing.T, tpm transport.TPM, indexes []int) []byte {
	t.Helper()
	sess, closeSess, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		t.Fatalf("start trial session: %v", err)
	}
	defer func() {
		if err := closeSess(); err != nil {
			t.Errorf("flush session: %v", err)
		}
	}()
	if _, err := (tpm2.PolicyPCR{
		PolicySession: sess.Handle(),
		Pcrs:          tpmdev.Selection(tpm2.TPMAlgSHA256, indexes),
	}).Execute(tpm); err != nil {
		t.Fatalf("PolicyPCR: %v", err)
	}
	rsp, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(tpm)
	if err != nil {
		t.Fatalf("PolicyGetDigest: %v", err)
	}
	return rsp.PolicyDigest.Buffer
}

// tpmReadPCRs reads the given SHA-256 PCRs.
func tpmReadPCRs(t *testing.T, tpm transport.TPM, indexes []int) []PCRValue {
	t.Helper()
	rsp, err := tpm2.PCRRead{PCRSelectionIn: tpmdev.Selection(tpm2.TPMAlgSHA256, indexes)}.Execute(tpm)
	if err != nil {
		t.Fatalf("PCRRead: %v", err)
	}
	if got := rsp.PCRSelectionOut; !reflect.DeepEqual(got, tpmdev.Selection(tpm2.TPMAlgSHA256, indexes)) {
		t.Fatalf("PCRRead returned selection %+v, want all of %v", got, indexes)
	}
	if len(rsp.PCRValues.Digests) != len(indexes) {
		t.Fatalf("PCRRead returned %d values for %d PCRs", len(rsp.PCRValues.Digests), len(indexes))
	}
	pcrs := make([]PCRValue, len(indexes))
	for i, idx := range indexes {
		pcrs[i] = PCRValue{Index: idx, Value: rsp.PCRValues.Digests[i].Buffer}
	}
	return pcrs
}

// TestPolicyPCRDigestSimulator cross-checks PolicyPCRDigest against a TPM.
func TestPolicyPCRDigestSimulator(t *testing.T) {
	tpm := openSimulator(t)

	t.Run("known answer", func(t *testing.T) {
		pcrs := tpmReadPCRs(t, tpm, []int{0, 7})
		for _, p := range pcrs {
			if !bytes.Equal(p.Value, make([]byte, 32)) {
				t.Fatalf("simulator PCR %d = %x, want zero", p.Index, p.Value)
			}
		}
		got := tpmPolicyPCR(t, tpm, []int{0, 7})
		if want := readGolden(t, goldenPolicyPCR07Zero); !bytes.Equal(got, want) {
			t.Errorf("simulator PolicyPCR(PCR 0, 7 zero) = %x, want %x", got, want)
		}
	})

	t.Run("extended pcr", func(t *testing.T) {
		sum := sha256.Sum256([]byte("icn-agent policy test"))
		if _, err := (tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)},
			Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
				{HashAlg: tpm2.TPMAlgSHA256, Digest: sum[:]},
			}},
		}).Execute(tpm); err != nil {
			t.Fatalf("PCRExtend: %v", err)
		}
		for _, indexes := range [][]int{{0, 7, 16}, {16}, {7, 16, 23}} {
			pcrs := tpmReadPCRs(t, tpm, indexes)
			want := tpmPolicyPCR(t, tpm, indexes)
			got, err := PolicyPCRDigest(tpm2.TPMAlgSHA256, pcrs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("PCRs %v: PolicyPCRDigest = %x, TPM computes %x", indexes, got, want)
			}
		}
	})
}
