package agentsrv

import (
	"bytes"
	"slices"
	"testing"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/sealstore"
)

func withPCRs(k *testKey, pcrs ...sealstore.PCRValue) *testKey {
	k.blob.Policy = sealstore.Policy{Kind: sealstore.PolicyPCR, PCRs: pcrs}
	return k
}

func TestUpdatePCRs(t *testing.T) {
	f := newFakeUnsealer()
	zero, one := bytes.Repeat([]byte{0}, 32), bytes.Repeat([]byte{1}, 32)
	bound := withPCRs(newTestKey(t, f, "bound", ""), sealstore.PCRValue{Index: 7, Value: zero}, sealstore.PCRValue{Index: 16, Value: zero})
	other := withPCRs(newTestKey(t, f, "other", ""), sealstore.PCRValue{Index: 7, Value: zero})
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: bound.blob}, Identity{Blob: other.blob})
	a := ts.dial(t)
	mustSign(t, a, bound.pub, []byte("x"))
	mustSign(t, a, other.pub, []byte("x"))

	ts.UpdatePCRs(map[int][]byte{7: zero, 16: one}, []int{16})

	if ts.cachedKeyBytes(t, "bound") != nil {
		t.Error("seed of an identity bound to the changed PCR is still cached")
	}
	if ts.cachedKeyBytes(t, "other") == nil {
		t.Error("seed of an identity not bound to the changed PCR was dropped")
	}
	if mm := ts.identityStatus(t, "bound").PCRMismatch; !slices.Equal(mm, []int{16}) {
		t.Errorf("status PCR mismatch = %v; want [16]", mm)
	}
	if mm := ts.identityStatus(t, "other").PCRMismatch; len(mm) != 0 {
		t.Errorf("status PCR mismatch of the other identity = %v; want none", mm)
	}
	// The mismatch reaches clients of the status extension too.
	c, err := client.Dial(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range st.Identities {
		want := map[string][]int{"bound": {16}, "other": nil}[is.Name]
		if !slices.Equal(is.PCRMismatch, want) {
			t.Errorf("client status %s PCR mismatch = %v; want %v", is.Name, is.PCRMismatch, want)
		}
	}
	// Back to the sealing-time value (after a reboot, say): no mismatch.
	ts.UpdatePCRs(map[int][]byte{7: zero, 16: zero}, []int{16})
	if mm := ts.identityStatus(t, "bound").PCRMismatch; len(mm) != 0 {
		t.Errorf("status PCR mismatch after recovery = %v; want none", mm)
	}
}
