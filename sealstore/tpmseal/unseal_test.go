package tpmseal_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// wireTap is a transport.TPM that keeps a copy of every response as the
// TPM sent it, and also the very slice it handed back to the caller for
// TPM2_Unseal (when it succeeded), to check afterwards what the caller
// left in it.
type wireTap struct {
	next transport.TPM
	// tamper, if set, may change an Unseal response before the caller
	// sees it (after the copy is taken).
	tamper func(rsp []byte)

	mu        sync.Mutex
	responses [][]byte // copies, as received
	unsealed  [][]byte // the Unseal responses handed back, not copies
}

func (w *wireTap) Send(cmd []byte) ([]byte, error) {
	rsp, err := w.next.Send(cmd)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.responses = append(w.responses, bytes.Clone(rsp))
	// Only answers that carry outData: the TPM may first answer with a
	// warning that tpmdev's retrier resends the command for.
	if tpmdev.CommandCode(cmd) == tpm2.TPMCCUnseal && err == nil && tpmdev.ResponseCode(rsp) == tpm2.TPMRCSuccess {
		if w.tamper != nil {
			w.tamper(rsp)
		}
		w.unsealed = append(w.unsealed, rsp)
	}
	return rsp, err
}

// holds reports whether any response contained secret, or an 8-byte window
// of it.
func (w *wireTap) holds(secret []byte) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.responses {
		for i := 0; i+8 <= len(secret); i++ {
			if bytes.Contains(r, secret[i:i+8]) {
				return true
			}
		}
	}
	return false
}

// The seed comes back from the TPM encrypted, in every kind of blob, and
// lands in clear only in the caller's buffer: no response carries it (or
// any 8 bytes of it), and the Unseal response the transport handed back
// is wiped by the time UnsealWith returns.
func TestUnsealResponseEncrypted(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			tap := &wireTap{}
			f := newFixture(t, kind, func(next transport.TPM) transport.TPM { tap.next = next; return tap })
			ctx := context.Background()
			key := newPolicyKey(t)
			pin := []byte("2468")
			cases := []struct {
				name string
				opts tpmseal.SealOptions
				with tpmseal.UnsealOptions
			}{
				{"pcr", tpmseal.SealOptions{Name: "pcr", PCRs: []int{7}}, tpmseal.UnsealOptions{}},
				{"pcr+pin", tpmseal.SealOptions{Name: "pin", PCRs: []int{7}, PIN: pin}, tpmseal.UnsealOptions{PIN: pin}},
				{"signed+pin", tpmseal.SealOptions{Name: "signed", PCRs: []int{7}, PIN: pin, Signer: &key.PublicKey}, tpmseal.UnsealOptions{PIN: pin}},
			}
			for _, c := range cases {
				seed := randomSeed(t)
				b, err := tpmseal.Seal(ctx, f.tpm, seed, c.opts)
				if err != nil {
					t.Fatal(err)
				}
				if c.opts.Signer != nil {
					c.with.Policies = append(c.with.Policies, sign(t, key, f.readPCRs(7), ""))
				}
				buf, err := secmem.New(sealstore.SeedSize)
				if err != nil {
					t.Fatal(err)
				}
				defer buf.Destroy()
				tap.mu.Lock()
				tap.unsealed = nil
				tap.mu.Unlock()
				if err := tpmseal.UnsealWith(ctx, f.tpm, b, buf.Bytes(), c.with); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if !bytes.Equal(buf.Bytes(), seed) {
					t.Fatalf("%s: dst holds %x, want the seed", c.name, buf.Bytes())
				}
				if tap.holds(seed) {
					t.Fatalf("%s: the seed came back from the TPM in clear", c.name)
				}
				tap.mu.Lock()
				unsealed := tap.unsealed
				tap.mu.Unlock()
				if len(unsealed) != 1 {
					t.Fatalf("%s: saw %d Unseal responses, want 1", c.name, len(unsealed))
				}
				if len(unsealed[0]) < 10+4+2+sealstore.SeedSize {
					t.Fatalf("%s: Unseal response of %d bytes", c.name, len(unsealed[0]))
				}
				if !bytes.Equal(unsealed[0], make([]byte, len(unsealed[0]))) {
					t.Errorf("%s: the Unseal response was not wiped: %x", c.name, unsealed[0])
				}
			}
			// The tap saw the traffic: a public key's bytes come back in
			// Load's response (the object's name is a digest of it).
			if len(tap.responses) < 3*5 {
				t.Fatalf("the tap saw %d responses", len(tap.responses))
			}
			f.runTPM(tpmdev.ResetLockout)
		})
	}
}

// A response whose HMAC does not check out is refused, whatever part of it
// was changed: the seed in dst is not trusted, and dst is left zeroed.
func TestUnsealResponseTampered(t *testing.T) {
	for _, part := range []struct {
		name string
		off  func(rsp []byte) int // index of the byte to flip
	}{
		{"ciphertext", func(rsp []byte) int { return 10 + 4 + 2 }},
		{"nonce", func(rsp []byte) int { return 10 + 4 + 2 + sealstore.SeedSize + 2 }},
		{"hmac", func(rsp []byte) int { return len(rsp) - 1 }},
	} {
		t.Run(part.name, func(t *testing.T) {
			tap := &wireTap{tamper: func(rsp []byte) {
				if len(rsp) > 10+4+2+sealstore.SeedSize {
					rsp[part.off(rsp)] ^= 1
				}
			}}
			f := newFixture(t, "sim", func(next transport.TPM) transport.TPM { tap.next = next; return tap })
			b, err := tpmseal.Seal(context.Background(), f.tpm, randomSeed(t), tpmseal.SealOptions{Name: "t", PCRs: []int{7}})
			if err != nil {
				t.Fatal(err)
			}
			dst := bytes.Repeat([]byte{0xaa}, sealstore.SeedSize)
			err = tpmseal.Unseal(context.Background(), f.tpm, b, dst)
			if err == nil {
				t.Fatal("a tampered response was accepted")
			}
			if errors.Is(err, tpmseal.ErrPCRMismatch) {
				t.Fatalf("tampering reported as a PCR mismatch: %v", err)
			}
			if !bytes.Equal(dst, make([]byte, sealstore.SeedSize)) {
				t.Errorf("dst not zeroed after a refused response: %x", dst)
			}
			t.Logf("refused: %v", err)
		})
	}
}
