package tpmseal_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmtrace"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// fixture is one TPM under test: the in-process simulator or a swtpm
// process, reached through the same tpmdev code path the daemon uses.
type fixture struct {
	t        testing.TB
	kind     string
	stateDir string
	sw       *swtpmtest.Instance
	wrap     func(transport.TPM) transport.TPM
	tpm      *tpmdev.TPM
}

var kinds = []string{"sim", "swtpm"}

func newFixture(t testing.TB, kind string, wrap func(transport.TPM) transport.TPM) *fixture {
	t.Helper()
	f := &fixture{t: t, kind: kind, stateDir: t.TempDir(), wrap: wrap}
	if kind == "swtpm" {
		f.sw = swtpmtest.Start(t)
	}
	f.open()
	t.Cleanup(func() { f.tpm.Close() })
	return f
}

func (f *fixture) spec() tpmdev.Spec {
	if f.sw != nil {
		spec, err := tpmdev.ParseSpec(f.sw.Spec())
		if err != nil {
			f.t.Fatal(err)
		}
		return spec
	}
	return tpmdev.Spec{Kind: tpmdev.KindSim}
}

// open opens the TPM as a new process would.
func (f *fixture) open() {
	f.t.Helper()
	if f.tpm != nil {
		f.tpm.Close()
	}
	tpm, err := tpmdev.Open(context.Background(), f.spec(), tpmdev.Options{StateDir: f.stateDir, Wrap: f.wrap})
	if err != nil {
		f.t.Fatal(err)
	}
	f.tpm = tpm
}

// reboot power-cycles the TPM: PCRs reset, loaded objects gone.
func (f *fixture) reboot() {
	f.t.Helper()
	if f.sw != nil {
		f.sw.Restart(f.t)
		return
	}
	if err := f.tpm.SimulateReboot(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) extend(pcr int) {
	f.t.Helper()
	err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		return tpmdev.ExtendPCR(tpm, pcr, []byte("measured something new"))
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func randomSeed(t testing.TB) []byte {
	seed := make([]byte, sealstore.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	return seed
}

func unseal(t testing.TB, tpm tpmseal.TPM, b *sealstore.Blob) ([]byte, error) {
	t.Helper()
	dst := make([]byte, sealstore.SeedSize)
	err := tpmseal.Unseal(context.Background(), tpm, b, dst)
	return dst, err
}

func TestSealUnsealRoundTrip(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			seed := randomSeed(t)
			b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "work", Comment: "me@host"})
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Policy.Indexes(); !slices.Equal(got, []int{0, 7}) {
				t.Errorf("default PCRs = %v; want [0 7]", got)
			}
			wantPub, _ := ssh.NewPublicKey(ed25519.NewKeyFromSeed(seed).Public())
			if !bytes.Equal(b.PublicKey.Marshal(), wantPub.Marshal()) {
				t.Errorf("blob public key does not match the seed")
			}
			// The blob goes through its on-disk encoding before unsealing.
			data, err := b.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			b2, err := sealstore.ParseBlob(data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := unseal(t, f.tpm, b2)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, seed) {
				t.Fatalf("unsealed seed differs from the sealed one")
			}
		})
	}
}

func TestBlobSurvivesRebootAndNewProcess(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			seed := randomSeed(t)
			b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "work"})
			if err != nil {
				t.Fatal(err)
			}
			f.reboot()
			if got, err := unseal(t, f.tpm, b); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("after reboot: %v", err)
			}
			f.open()
			if got, err := unseal(t, f.tpm, b); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("in a new process: %v", err)
			}
		})
	}
}

func TestPCRBinding(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			seed := randomSeed(t)
			bound, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "bound", PCRs: []int{0, 7, 16}})
			if err != nil {
				t.Fatal(err)
			}
			other, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "other", PCRs: []int{0, 7}})
			if err != nil {
				t.Fatal(err)
			}
			f.extend(16)
			f.extend(23)

			_, err = unseal(t, f.tpm, bound)
			var mm *tpmseal.PCRMismatchError
			if !errors.Is(err, tpmseal.ErrPCRMismatch) || !errors.As(err, &mm) || !slices.Equal(mm.PCRs, []int{16}) {
				t.Fatalf("unseal after extending PCR 16 = %v; want ErrPCRMismatch naming PCR 16", err)
			}
			if err := tpmseal.CheckPolicy(context.Background(), f.tpm, bound, nil); !errors.As(err, &mm) || !slices.Equal(mm.PCRs, []int{16}) {
				t.Fatalf("CheckPolicy = %v; want a PCR mismatch naming PCR 16", err)
			}
			if got, err := unseal(t, f.tpm, other); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("PCRs outside the selection changed the outcome: %v", err)
			}
			// After a reboot PCR 16 is back to its sealing-time value.
			f.reboot()
			if got, err := unseal(t, f.tpm, bound); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("after reboot: %v", err)
			}
		})
	}
}

// Failed policy checks must not leak sessions: a TPM has only a few slots
// and swtpm has no resource manager to clean up after us.
func TestFailedUnsealsLeakNoSessions(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			b, err := tpmseal.Seal(context.Background(), f.tpm, randomSeed(t), tpmseal.SealOptions{Name: "bound", PCRs: []int{16}})
			if err != nil {
				t.Fatal(err)
			}
			f.extend(16)
			for i := 0; i < 10; i++ {
				if _, err := unseal(t, f.tpm, b); !errors.Is(err, tpmseal.ErrPCRMismatch) {
					t.Fatalf("attempt %d: %v; want ErrPCRMismatch", i, err)
				}
			}
			err = f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
				for _, first := range []tpm2.TPMHandle{0x02000000, 0x80000000} {
					rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tpm)
					if err != nil {
						return err
					}
					hs, err := rsp.CapabilityData.Data.Handles()
					if err != nil {
						return err
					}
					var ours []tpm2.TPMHandle
					for _, h := range hs.Handle {
						if h>>24 == first>>24 {
							ours = append(ours, h)
						}
					}
					// Only the SRK may remain loaded.
					if want := map[tpm2.TPMHandle]int{0x02000000: 0, 0x80000000: 1}[first]; len(ours) != want {
						t.Errorf("handles of type %#x left loaded: %#x; want %d", first>>24, ours, want)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The seed must never cross the TPM bus in clear: Create runs in a salted
// session with command parameter encryption, Unseal with response
// parameter encryption.
func TestSeedNeverOnTheBus(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var rec *tpmtrace.Recorder
			f := newFixture(t, kind, func(next transport.TPM) transport.TPM { rec = tpmtrace.NewRecorder(next); return rec })
			seed := randomSeed(t)
			b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "work"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := unseal(t, f.tpm, b)
			if err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("unseal: %v", err)
			}
			ex := rec.Exchanges()
			var sawCreate, sawUnseal bool
			for _, e := range ex {
				switch tpmdev.CommandCode(e.Command) {
				case tpm2.TPMCCCreate:
					sawCreate = true
				case tpm2.TPMCCUnseal:
					sawUnseal = true
				}
			}
			if !sawCreate || !sawUnseal {
				t.Fatalf("recorder missed Create (%v) or Unseal (%v)", sawCreate, sawUnseal)
			}
			if rec.Contains(seed) {
				t.Fatal("the seed crossed the TPM bus in clear")
			}
			// Nor any 8-byte window of it.
			for i := 0; i+8 <= len(seed); i++ {
				if rec.Contains(seed[i : i+8]) {
					t.Fatalf("seed bytes %d-%d crossed the TPM bus in clear", i, i+8)
				}
			}
			// The recorder itself works: an unencrypted run would be caught.
			if !rec.Contains(b.SRKName[2:10]) && !rec.Contains(b.Public[2:10]) {
				t.Fatal("recorder saw none of the public data it should have seen")
			}
		})
	}
}

// CreatePrimary runs at most once per process, however many seals and
// unseals; a cold unseal costs five commands.
func TestTPMCommandCounts(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var c *tpmtrace.Counter
			f := newFixture(t, kind, func(next transport.TPM) transport.TPM { c = tpmtrace.NewCounter(next); return c })
			var blobs []*sealstore.Blob
			for _, name := range []string{"a", "b", "c"} {
				b, err := tpmseal.Generate(context.Background(), f.tpm, tpmseal.SealOptions{Name: name})
				if err != nil {
					t.Fatal(err)
				}
				blobs = append(blobs, b)
			}
			for _, b := range blobs {
				if _, err := unseal(t, f.tpm, b); err != nil {
					t.Fatal(err)
				}
			}
			before := c.Snapshot()
			beforeTotal := c.Total()
			if _, err := unseal(t, f.tpm, blobs[0]); err != nil {
				t.Fatal(err)
			}
			cold := c.Total() - beforeTotal
			after := c.Snapshot()
			t.Logf("%s: one cold unseal = %d TPM commands", kind, cold)
			if cold != 5 {
				t.Errorf("cold unseal took %d commands; want 5 (Load, StartAuthSession, PolicyPCR, Unseal, FlushContext)", cold)
			}
			for _, cc := range []tpm2.TPMCC{tpm2.TPMCCLoad, tpm2.TPMCCStartAuthSession, tpm2.TPMCCPolicyPCR, tpm2.TPMCCUnseal, tpm2.TPMCCFlushContext} {
				if after[cc]-before[cc] != 1 {
					t.Errorf("cold unseal ran %v %d times; want 1", cc, after[cc]-before[cc])
				}
			}
			if n := c.Count(tpm2.TPMCCCreatePrimary); n != 1 {
				t.Errorf("CreatePrimary ran %d times in one process; want 1", n)
			}
		})
	}
}

func TestOtherTPMRejected(t *testing.T) {
	a := newFixture(t, "sim", nil)
	b, err := tpmseal.Generate(context.Background(), a.tpm, tpmseal.SealOptions{Name: "work"})
	if err != nil {
		t.Fatal(err)
	}
	a.tpm.Close()
	other := newFixture(t, "sim", nil) // another seed: another TPM
	if _, err := unseal(t, other.tpm, b); !errors.Is(err, tpmseal.ErrSRKMismatch) {
		t.Fatalf("unseal on another TPM = %v; want ErrSRKMismatch", err)
	}
}

func TestSealRejectsBadInput(t *testing.T) {
	f := newFixture(t, "sim", nil)
	tests := []struct {
		name string
		seed []byte
		opts tpmseal.SealOptions
	}{
		{"short seed", make([]byte, 31), tpmseal.SealOptions{Name: "x"}},
		{"bad name", make([]byte, 32), tpmseal.SealOptions{Name: "../x"}},
		{"pcr out of range", make([]byte, 32), tpmseal.SealOptions{Name: "x", PCRs: []int{24}}},
		{"duplicate pcr", make([]byte, 32), tpmseal.SealOptions{Name: "x", PCRs: []int{7, 7}}},
		{"empty pcr list", make([]byte, 32), tpmseal.SealOptions{Name: "x", PCRs: []int{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := tpmseal.Seal(context.Background(), f.tpm, tt.seed, tt.opts); err == nil {
				t.Fatalf("Seal succeeded: %+v", b)
			}
		})
	}
}

func TestUnsealDamagedBlob(t *testing.T) {
	f := newFixture(t, "sim", nil)
	b, err := tpmseal.Generate(context.Background(), f.tpm, tpmseal.SealOptions{Name: "work"})
	if err != nil {
		t.Fatal(err)
	}
	damaged := *b
	damaged.Private = bytes.Clone(b.Private)
	damaged.Private[len(damaged.Private)-1] ^= 1
	if _, err := unseal(t, f.tpm, &damaged); err == nil || errors.Is(err, tpmseal.ErrPCRMismatch) {
		t.Fatalf("unseal of a damaged private area = %v; want a TPM integrity error", err)
	}
	// The TPM keeps working for everyone else.
	if _, err := unseal(t, f.tpm, b); err != nil {
		t.Fatalf("intact blob after a damaged one: %v", err)
	}
}

func BenchmarkSeal(b *testing.B) {
	f := newFixture(b, "sim", nil)
	seed := randomSeed(b)
	for b.Loop() {
		if _, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkColdUnseal(b *testing.B) {
	for _, kind := range kinds {
		b.Run(kind, func(b *testing.B) {
			f := newFixture(b, kind, nil)
			blob, err := tpmseal.Generate(context.Background(), f.tpm, tpmseal.SealOptions{Name: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, sealstore.SeedSize)
			for b.Loop() {
				if err := tpmseal.Unseal(context.Background(), f.tpm, blob, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSignAfterUnseal(b *testing.B) {
	f := newFixture(b, "sim", nil)
	blob, err := tpmseal.Generate(context.Background(), f.tpm, tpmseal.SealOptions{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	seed, err := unseal(b, f.tpm, blob)
	if err != nil {
		b.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	msg := make([]byte, 128)
	for b.Loop() {
		ed25519.Sign(priv, msg)
	}
}
