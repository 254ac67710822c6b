package sealstore_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/sealstore"
)

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

// WriteListings is the table icn-agent list prints.
func TestWriteListings(t *testing.T) {
	ls := []sealstore.Listing{
		{Name: "work", Fingerprint: "SHA256:w", PCRs: []int{0, 7}, DIDKey: "did:key:z", Policy: "pcr", Status: sealstore.StatusUsable},
		{Name: "fw", Fingerprint: "SHA256:f", PCRs: []int{7}, DIDKey: "did:key:y", Policy: "signed", PIN: true, Status: sealstore.StatusNoSignedPolicy, Error: "none approves"},
		{Name: "moved", Fingerprint: "SHA256:m", PCRs: []int{0, 7}, Policy: "pcr", Status: sealstore.StatusPCRMismatch, MismatchedPCRs: []int{7}},
		{Name: "bad", Status: sealstore.StatusUnreadable, Error: "malformed"},
	}
	var b strings.Builder
	if err := sealstore.WriteListings(&b, ls); err != nil {
		t.Fatal(err)
	}
	want := `NAME   FINGERPRINT  PCRS           DID        STATUS
work   SHA256:w     0,7            did:key:z  usable
fw     SHA256:f     7 signed +PIN  did:key:y  no-signed-policy: none approves
moved  SHA256:m     0,7            -          PCR mismatch: 7
bad    -            -              -          unreadable: malformed
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPolicyDescribe(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := sealstore.NewPolicyKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := []sealstore.PCRValue{{Index: 0}, {Index: 7}}
	for _, c := range []struct {
		p    sealstore.Policy
		want string
	}{
		{sealstore.Policy{Kind: sealstore.PolicyPCR, PCRs: pcrs}, "PCRs 0,7"},
		{sealstore.Policy{Kind: sealstore.PolicyPCR, PCRs: pcrs, PIN: true}, "PCRs 0,7, PIN"},
		{sealstore.Policy{Kind: sealstore.PolicyAuthorizedPCR, PCRs: pcrs, Signer: key.PolicyKeyPublic(), PIN: true}, "PCRs 0,7 signed by key " + key.ID() + ", PIN"},
	} {
		if got := c.p.Describe(); got != c.want {
			t.Errorf("Describe = %q, want %q", got, c.want)
		}
	}
}
