package tpmseal_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// CheckStatus names each way a blob cannot unseal, without unsealing;
// ReadPCRValues sees what it compares.
func TestCheckStatus(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "sim", nil)
	b, err := tpmseal.Generate(ctx, f.tpm, tpmseal.SealOptions{Name: "s", PCRs: []int{0, 7}})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := sealstore.NewPolicySigningKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := tpmseal.Generate(ctx, f.tpm, tpmseal.SealOptions{Name: "p", PCRs: []int{7}, Signer: key.Public})
	if err != nil {
		t.Fatal(err)
	}
	if st := tpmseal.CheckStatus(ctx, f.tpm, b, nil); st.Status != sealstore.StatusUsable || st.Err != nil {
		t.Fatalf("fresh blob: %+v, want usable", st)
	}
	if st := tpmseal.CheckStatus(ctx, f.tpm, signed, nil); st.Status != sealstore.StatusNoSignedPolicy || st.Err == nil {
		t.Fatalf("signed-policy blob without policies: %+v", st)
	}

	before, err := tpmseal.ReadPCRValues(ctx, f.tpm, []int{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	f.extend(7)
	after, err := tpmseal.ReadPCRValues(ctx, f.tpm, []int{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || after[1].Index != 7 || !bytes.Equal(before[0].Value, after[0].Value) || bytes.Equal(before[1].Value, after[1].Value) {
		t.Fatalf("PCR values before %v, after extending 7 %v", before, after)
	}
	if st := tpmseal.CheckStatus(ctx, f.tpm, b, nil); st.Status != sealstore.StatusPCRMismatch || !slices.Equal(st.MismatchedPCRs, []int{7}) {
		t.Fatalf("after extending PCR 7: %+v, want pcr-mismatch of 7", st)
	}

	f.tpm.Close()
	other := newFixture(t, "sim", nil) // another seed: another TPM
	if st := tpmseal.CheckStatus(ctx, other.tpm, b, nil); st.Status != sealstore.StatusOtherTPM {
		t.Fatalf("on another TPM: %+v, want other-tpm", st)
	}
}
