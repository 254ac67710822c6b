package tpmseal_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// createTamper changes the TPM2_Create command before the TPM sees it, or
// its successful response before the caller does.
type createTamper struct {
	next transport.TPM
	cmd  func(cmd []byte)
	rsp  func(rsp []byte)
}

func (c *createTamper) Send(cmd []byte) ([]byte, error) {
	if tpmdev.CommandCode(cmd) == tpm2.TPMCCCreate && c.cmd != nil {
		cmd = bytes.Clone(cmd)
		c.cmd(cmd)
	}
	rsp, err := c.next.Send(cmd)
	if err == nil && tpmdev.CommandCode(cmd) == tpm2.TPMCCCreate && tpmdev.ResponseCode(rsp) == tpm2.TPMRCSuccess && c.rsp != nil {
		c.rsp(rsp)
	}
	return rsp, err
}

// A TPM2_Create whose command HMAC is wrong is refused by the TPM, and one
// whose response was altered is refused by Seal; either way no session
// is left loaded, and the next Seal works.
func TestSealSessionTampered(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  func([]byte)
		rsp  func([]byte)
	}{
		// The command's HMAC is the last byte of its authorization area.
		{"command hmac", func(cmd []byte) { cmd[18+binary.BigEndian.Uint32(cmd[14:])-1] ^= 1 }, nil},
		// The first bytes of outPrivate, and the response's HMAC.
		{"response outPrivate", nil, func(rsp []byte) { rsp[10+4+2] ^= 1 }},
		{"response hmac", nil, func(rsp []byte) { rsp[len(rsp)-1] ^= 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tamper := &createTamper{cmd: tc.cmd, rsp: tc.rsp}
			f := newFixture(t, "sim", func(next transport.TPM) transport.TPM { tamper.next = next; return tamper })
			opts := tpmseal.SealOptions{Name: "t", PCRs: []int{7}, PIN: []byte("1234")}
			_, err := tpmseal.Seal(context.Background(), f.tpm, randomSeed(t), opts)
			if err == nil {
				t.Fatal("a tampered TPM2_Create was accepted")
			}
			t.Logf("refused: %v", err)
			f.runTPM(func(tpm transport.TPM) error {
				rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: 0x02000000, PropertyCount: 64}.Execute(tpm)
				if err != nil {
					return err
				}
				hs, err := rsp.CapabilityData.Data.Handles()
				if err != nil {
					return err
				}
				for _, h := range hs.Handle {
					if h>>24 == 0x02 {
						t.Errorf("session %#x left loaded", h)
					}
				}
				return nil
			})
			tamper.cmd, tamper.rsp = nil, nil
			seed := randomSeed(t)
			b, err := tpmseal.Seal(context.Background(), f.tpm, seed, opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{PIN: opts.PIN})
			if err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("unseal after the refusal: %v", err)
			}
		})
	}
}
