package sealstore_test

import (
	"bytes"
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
