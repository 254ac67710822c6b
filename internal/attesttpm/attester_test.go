package attesttpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"path/filepath"
	"testing"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/audit"
	"github.com/icn/icn-agent/sealstore"
)

// The daemon's Attester is an audit.Stamper.
var _ audit.Stamper = (*Attester)(nil)

func TestAKPath(t *testing.T) {
	if got, want := AKPath("/home/u/.local/share/icn-agent/identities"), "/home/u/.local/share/icn-agent/attestation-key.pem"; got != want {
		t.Errorf("AKPath = %q; want %q", got, want)
	}
}

// TestAttester: the AK is created on the first request, in the file at
// its path; quotes verify, stamps verify with the same AK, and the AK is
// loaded only while it works (the TPM keeps just its SRK in between).
func TestAttester(t *testing.T) {
	f := newFixture(t, "sim")
	id := f.seal("work", []int{0, 7})
	path := filepath.Join(f.stateDir, "ak.pem")
	a := NewAttester(f.tpm, path, nil, nil)
	ctx := context.Background()

	nonce := newNonce(t)
	ev, err := a.Quote(ctx, id.blob, nonce, []int{10}, seedSigner(id.seed))
	if err != nil {
		t.Fatal(err)
	}
	res, err := attest.Verify(ev, attest.VerifyOptions{Nonce: nonce, IdentityKey: id.blob.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Certified || !res.SealedPolicyMatches || res.SealedPolicyKind != attest.PolicyPCR {
		t.Errorf("quote: %+v", res)
	}
	if objects, _ := f.handles(); objects != 1 {
		t.Errorf("after a quote %d objects are loaded; want 1 (the SRK)", objects)
	}

	d := sha256.Sum256([]byte("log head"))
	s, err := a.Stamp(ctx, d[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyStamp(s, d[:], res.AKName); err != nil {
		t.Errorf("stamp by another AK than the quote's: %v", err)
	}
	if objects, _ := f.handles(); objects != 1 {
		t.Errorf("after a stamp %d objects are loaded; want 1 (the SRK)", objects)
	}

	// A new Attester (a restarted agent) loads the same AK from its file.
	ak := f.ak(path)
	if !bytes.Equal(ak.Name(), res.AKName) {
		t.Error("the AK file holds another key than the one that quoted")
	}
}

// TestSubjectPolicy: a plain PCR policy carries its kind and PIN; a
// signed policy carries its signer, and only approvals by that signer.
func TestSubjectPolicy(t *testing.T) {
	b := &sealstore.Blob{Policy: sealstore.Policy{Kind: sealstore.PolicyPCR, PIN: true}}
	sp := subjectPolicy(b, nil)
	if sp.Kind != attest.PolicyPCR || !sp.PIN || sp.Approvals != nil {
		t.Errorf("PCR policy with PIN: %+v", sp)
	}
}
