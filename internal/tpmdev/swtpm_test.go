package tpmdev

import (
	"context"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/swtpmtest"
)

func loadedHandles(t *testing.T, tp transport.TPM, first tpm2.TPMHandle) []tpm2.TPMHandle {
	t.Helper()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	var out []tpm2.TPMHandle
	for _, h := range hs.Handle {
		if h>>24 == first>>24 {
			out = append(out, h)
		}
	}
	return out
}

// A client that died on a swtpm leaves its objects and sessions loaded
// (there is no resource manager); Open flushes them, or the TPM would soon
// run out of slots.
func TestOpenFlushesStaleHandlesOnSwtpm(t *testing.T) {
	sw := swtpmtest.Start(t)
	spec, err := ParseSpec(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	dead, err := Open(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = dead.Run(context.Background(), func(tp transport.TPM) error {
		if _, err := (tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}).Execute(tp); err != nil {
			return err
		}
		_, err := tpm2.StartAuthSession{
			TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull, NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
			SessionType: tpm2.TPMSEHMAC, Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}, AuthHash: tpm2.TPMAlgSHA256,
		}.Execute(tp)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The client dies without cleaning up: no Close.

	tpm, err := Open(context.Background(), spec, Options{FlushStale: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	err = tpm.Run(context.Background(), func(tp transport.TPM) error {
		if h := loadedHandles(t, tp, 0x80000000); len(h) != 0 {
			t.Errorf("transient objects still loaded after Open: %#x", h)
		}
		if h := loadedHandles(t, tp, 0x02000000); len(h) != 0 {
			t.Errorf("sessions still loaded after Open: %#x", h)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
