package sealstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/sealstore"
)

// CheckStatus names each way a blob cannot unseal, without unsealing;
// ReadPCRValues sees what it compares.
func TestCheckStatus(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "sim", nil)
	b, err := sealstore.Generate(ctx, f.tpm, sealstore.SealOptions{Name: "s", PCRs: []int{0, 7}})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := sealstore.NewPolicySigningKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := sealstore.Generate(ctx, f.tpm, sealstore.SealOptions{Name: "p", PCRs: []int{7}, Signer: key.Public})
	if err != nil {
		t.Fatal(err)
	}
	if st := sealstore.CheckStatus(ctx, f.tpm, b, nil); st.Status != sealstore.StatusUsable || st.Err != nil {
		t.Fatalf("fresh blob: %+v, want usable", st)
	}
	if st := sealstore.CheckStatus(ctx, f.tpm, signed, nil); st.Status != sealstore.StatusNoSignedPolicy || st.Err == nil {
		t.Fatalf("signed-policy blob without policies: %+v", st)
	}

	before, err := sealstore.ReadPCRValues(ctx, f.tpm, []int{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	f.extend(7)
	after, err := sealstore.ReadPCRValues(ctx, f.tpm, []int{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || after[1].Index != 7 || !bytes.Equal(before[0].Value, after[0].Value) || bytes.Equal(before[1].Value, after[1].Value) {
		t.Fatalf("PCR values before %v, after extending 7 %v", before, after)
	}
	if st := sealstore.CheckStatus(ctx, f.tpm, b, nil); st.Status != sealstore.StatusPCRMismatch || !slices.Equal(st.MismatchedPCRs, []int{7}) {
		t.Fatalf("after extending PCR 7: %+v, want pcr-mismatch of 7", st)
	}

	f.tpm.Close()
	other := newFixture(t, "sim", nil) // another seed: another TPM
	if st := sealstore.CheckStatus(ctx, other.tpm, b, nil); st.Status != sealstore.StatusOtherTPM {
		t.Fatalf("on another TPM: %+v, want other-tpm", st)
	}
}

// Describe and SetStatus fill the list --json shape.
func TestDescribe(t *testing.T) {
	pub, err := sealstore.PublicKey(bytes.Repeat([]byte{1}, sealstore.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	b := &sealstore.Blob{Name: "a", Comment: "c", PublicKey: pub, Policy: sealstore.Policy{PIN: true, PCRs: []sealstore.PCRValue{{Index: 0}, {Index: 7}}}}
	l := sealstore.Describe(sealstore.Entry{Name: "a", Path: "/s/a.sealed", Blob: b})
	l.SetStatus(sealstore.BlobStatus{Status: sealstore.StatusPCRMismatch, MismatchedPCRs: []int{7}, Err: errors.New("changed")})
	got, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"a","fingerprint":"` + ssh.FingerprintSHA256(pub) + `","pcrs":[0,7],"did_key":"did:key:z6Mk` // the rest is didkey's
	if !strings.HasPrefix(string(got), want) || !strings.HasSuffix(string(got), `,"comment":"c","policy":"pcr","pin":true,"status":"pcr-mismatch","mismatched_pcrs":[7],"path":"/s/a.sealed"}`) {
		t.Errorf("got %s", got)
	}
	bad := sealstore.Describe(sealstore.Entry{Name: "x", Path: "/s/x.sealed", Err: sealstore.ErrMalformedBlob})
	if bad.Status != sealstore.StatusUnreadable || bad.Error != sealstore.ErrMalformedBlob.Error() || bad.Fingerprint != "" {
		t.Errorf("unreadable entry: %+v", bad)
	}
}
