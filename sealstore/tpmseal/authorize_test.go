package tpmseal_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmfault"
	"github.com/icn/icn-agent/internal/tpmtrace"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// readPCRs reads SHA-256 PCR values from the fixture's TPM.
func (f *fixture) readPCRs(indexes ...int) []sealstore.PCRValue {
	f.t.Helper()
	var out []sealstore.PCRValue
	err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		values, _, err := tpmdev.ReadPCRs(tpm, tpm2.TPMAlgSHA256, indexes)
		for i, idx := range indexes {
			if err == nil {
				out = append(out, sealstore.PCRValue{Index: idx, Value: values[i]})
			}
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// da reads the fixture TPM's dictionary-attack state.
func (f *fixture) da() tpmdev.DAState {
	f.t.Helper()
	var st tpmdev.DAState
	err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		var err error
		st, err = tpmdev.ReadDA(tpm)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// runTPM runs fn on the fixture's TPM and fails the test on error.
func (f *fixture) runTPM(fn func(transport.TPM) error) {
	f.t.Helper()
	if err := f.tpm.Run(context.Background(), fn); err != nil {
		f.t.Fatal(err)
	}
}

func newPolicyKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t testing.TB, key *ecdsa.PrivateKey, pcrs []sealstore.PCRValue, comment string) *sealstore.SignedPolicy {
	t.Helper()
	p, err := sealstore.SignPolicy(key, pcrs, comment, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func unsealWith(t testing.TB, tpm tpmseal.TPM, b *sealstore.Blob, opts tpmseal.UnsealOptions) ([]byte, error) {
	t.Helper()
	dst := make([]byte, sealstore.SeedSize)
	err := tpmseal.UnsealWith(context.Background(), tpm, b, dst, opts)
	return dst, err
}

// Signed PCR policies survive a PCR change without resealing: the blob
// fixes no values, and a newly signed policy for the new values makes it
// unseal; the old policy still works once the old values are back.
func TestSignedPolicyUnseal(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			ctx := context.Background()
			key := newPolicyKey(t)
			seed := randomSeed(t)
			b, err := tpmseal.Seal(ctx, f.tpm, seed, tpmseal.SealOptions{Name: "fw", PCRs: []int{7, 16}, Signer: &key.PublicKey})
			if err != nil {
				t.Fatal(err)
			}
			if b.Policy.Kind != sealstore.PolicyAuthorizedPCR || b.Policy.PIN || !slices.Equal(b.Policy.Indexes(), []int{7, 16}) || b.Policy.HasValues() {
				t.Fatalf("policy %+v", b.Policy)
			}
			// Through the on-disk encoding.
			data, err := b.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if b, err = sealstore.ParseBlob(data); err != nil {
				t.Fatal(err)
			}

			// Nothing signed yet: the error names the digest and values.
			before := f.readPCRs(7, 16)
			_, err = unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{})
			wantMissing(t, err, before)

			old := sign(t, key, before, "old firmware")
			other := sign(t, newPolicyKey(t), before, "someone else's key")
			if got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{Policies: []*sealstore.SignedPolicy{other}}); err == nil || bytes.Equal(got, seed) {
				t.Fatalf("a policy signed by another key unsealed (%v)", err)
			}
			if got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{Policies: []*sealstore.SignedPolicy{other, old}}); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("unseal with the signed policy: %v", err)
			}

			// "Firmware update": PCR 16 moves. The old policy no longer
			// matches; the error says what to sign.
			f.extend(16)
			after := f.readPCRs(7, 16)
			_, err = unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{Policies: []*sealstore.SignedPolicy{old}})
			wantMissing(t, err, after)
			if err := tpmseal.CheckPolicy(ctx, f.tpm, b, []*sealstore.SignedPolicy{old}); !errors.Is(err, sealstore.ErrNoSignedPolicy) {
				t.Errorf("CheckPolicy after the change = %v, want ErrNoSignedPolicy", err)
			}
			var mm *tpmseal.PCRMismatchError
			if err := tpmseal.CheckPolicy(ctx, f.tpm, b, nil); errors.As(err, &mm) {
				t.Errorf("CheckPolicy of a signed blob = %v; want no PCR mismatch", err)
			}

			// Sign the new values: it unseals, without resealing.
			var mp *sealstore.MissingPolicyError
			errors.As(err, &mp)
			updated := sign(t, key, mp.PCRs, "new firmware")
			both := []*sealstore.SignedPolicy{old, updated}
			if err := tpmseal.CheckPolicy(ctx, f.tpm, b, both); err != nil {
				t.Errorf("CheckPolicy with the new policy = %v", err)
			}
			if got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{Policies: both}); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("unseal after signing the new values: %v", err)
			}

			// Reboot: PCR 16 is back to its old value, and the old
			// signature unseals again.
			f.reboot()
			if !samePCRs(f.readPCRs(7, 16), before) {
				t.Fatalf("PCRs after reboot differ from the values before the change")
			}
			if got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{Policies: both}); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("unseal with the old policy after reboot: %v", err)
			}
			if got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{Policies: []*sealstore.SignedPolicy{updated}}); err == nil || bytes.Equal(got, seed) {
				t.Fatalf("the new policy unsealed in the old state (%v)", err)
			}
		})
	}
}

func samePCRs(a, b []sealstore.PCRValue) bool {
	return slices.EqualFunc(a, b, func(x, y sealstore.PCRValue) bool { return x.Index == y.Index && bytes.Equal(x.Value, y.Value) })
}

// wantMissing checks that err is a MissingPolicyError for the values
// current, naming the digest and the values in its message.
func wantMissing(t *testing.T, err error, current []sealstore.PCRValue) {
	t.Helper()
	var mp *sealstore.MissingPolicyError
	if !errors.Is(err, sealstore.ErrNoSignedPolicy) || !errors.As(err, &mp) {
		t.Fatalf("unseal = %v, want a MissingPolicyError", err)
	}
	digest, derr := sealstore.PolicyPCRDigest(tpm2.TPMAlgSHA256, current)
	if derr != nil {
		t.Fatal(derr)
	}
	if !bytes.Equal(mp.Digest, digest) || !samePCRs(mp.PCRs, current) {
		t.Errorf("MissingPolicyError digest %x values %v; want %x for the current values", mp.Digest, mp.PCRs, digest)
	}
	for _, want := range []string{hex.EncodeToString(digest), sealstore.FormatPCRValues(current, ", ")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// The PIN: right unseals, missing and wrong do not, and a wrong PIN counts
// towards the TPM's dictionary-attack lockout while nothing else does.
func TestPINUnseal(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			ctx := context.Background()
			key := newPolicyKey(t)
			seed := randomSeed(t)
			pin := []byte("correct horse")
			pcrBlob, err := tpmseal.Seal(ctx, f.tpm, seed, tpmseal.SealOptions{Name: "pin", PCRs: []int{7, 16}, PIN: pin})
			if err != nil {
				t.Fatal(err)
			}
			signedBlob, err := tpmseal.Seal(ctx, f.tpm, seed, tpmseal.SealOptions{Name: "signedpin", PCRs: []int{7}, PIN: pin, Signer: &key.PublicKey})
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range []*sealstore.Blob{pcrBlob, signedBlob} {
				pub, err := b.SealedPublic()
				if err != nil || !b.Policy.PIN || pub.ObjectAttributes.NoDA {
					t.Fatalf("%s: PIN %v, noDA %v (%v); want a DA-protected PIN blob", b.Name, b.Policy.PIN, pub.ObjectAttributes.NoDA, err)
				}
			}
			policies := []*sealstore.SignedPolicy{sign(t, key, f.readPCRs(7), "")}
			if st := f.da(); st.Counter != 0 || st.MaxTries < 3 {
				t.Fatalf("DA state at start %+v", st)
			}
			steps := []struct {
				name    string
				b       *sealstore.Blob
				pin     []byte
				want    error // nil: unseals
				counter uint32
			}{
				{"right", pcrBlob, pin, nil, 0},
				{"none", pcrBlob, nil, tpmseal.ErrPINRequired, 0},
				{"wrong", pcrBlob, []byte("correct horsf"), tpmseal.ErrWrongPIN, 1},
				{"right after wrong", pcrBlob, pin, nil, 1},
				{"signed right", signedBlob, pin, nil, 1},
				{"signed wrong", signedBlob, []byte("1234"), tpmseal.ErrWrongPIN, 2},
				{"signed right after wrong", signedBlob, pin, nil, 2},
			}
			for _, s := range steps {
				got, err := unsealWith(t, f.tpm, s.b, tpmseal.UnsealOptions{PIN: s.pin, Policies: policies})
				switch {
				case s.want == nil && (err != nil || !bytes.Equal(got, seed)):
					t.Errorf("%s: %v, want the seed", s.name, err)
				case s.want != nil && !errors.Is(err, s.want):
					t.Errorf("%s: %v, want %v", s.name, err, s.want)
				}
				if errors.Is(s.want, tpmseal.ErrWrongPIN) && (!errors.Is(err, tpm2.TPMRCAuthFail) || !strings.Contains(err.Error(), "wrong PIN")) {
					t.Errorf("%s: %v does not say wrong PIN and TPM_RC_AUTH_FAIL", s.name, err)
				}
				if c := f.da().Counter; c != s.counter {
					t.Errorf("%s: DA counter %d, want %d", s.name, c, s.counter)
				}
			}
			// A PCR mismatch is reported as such, and a wrong PIN given
			// then is not counted: the policy fails first.
			f.extend(16)
			if _, err := unsealWith(t, f.tpm, pcrBlob, tpmseal.UnsealOptions{PIN: []byte("wrong")}); !errors.Is(err, tpmseal.ErrPCRMismatch) {
				t.Errorf("PCR mismatch with a wrong PIN: %v, want ErrPCRMismatch", err)
			}
			if c := f.da().Counter; c != 2 {
				t.Errorf("DA counter after a PCR mismatch %d, want 2", c)
			}
			if err := tpmseal.CheckPolicy(ctx, f.tpm, pcrBlob, nil); !errors.Is(err, tpmseal.ErrPCRMismatch) {
				t.Errorf("CheckPolicy = %v, want ErrPCRMismatch", err)
			}
			f.runTPM(tpmdev.ResetLockout)
		})
	}
}

// Lockout: after the threshold the TPM refuses even the right PIN, with
// ErrLockout, until the lockout is reset.
func TestPINLockout(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			seed := randomSeed(t)
			pin := []byte("2468")
			b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "locked", PIN: pin})
			if err != nil {
				t.Fatal(err)
			}
			f.runTPM(func(tpm transport.TPM) error { return tpmdev.SetDAParameters(tpm, 2, 1000, 1000) })
			steps := []struct {
				pin       []byte
				want      error
				inLockout bool
			}{
				{[]byte("1111"), tpmseal.ErrWrongPIN, false},
				{[]byte("2222"), tpmseal.ErrWrongPIN, true},
				{pin, tpmseal.ErrLockout, true},
				{[]byte("3333"), tpmseal.ErrLockout, true},
			}
			for i, s := range steps {
				_, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{PIN: s.pin})
				if !errors.Is(err, s.want) {
					t.Errorf("step %d: %v, want %v", i, err, s.want)
				}
				if errors.Is(s.want, tpmseal.ErrLockout) && (errors.Is(err, tpmseal.ErrWrongPIN) || !errors.Is(err, tpm2.TPMRCLockout) || !strings.Contains(err.Error(), "dictionary-attack lockout")) {
					t.Errorf("step %d: %v: want a lockout error distinct from a wrong PIN", i, err)
				}
				if st := f.da(); st.InLockout != s.inLockout || st.Counter != 2 && s.inLockout {
					t.Errorf("step %d: DA state %+v, want in lockout %v", i, st, s.inLockout)
				}
			}
			f.runTPM(tpmdev.ResetLockout)
			if got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{PIN: pin}); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("right PIN after the lockout was reset: %v", err)
			}
			f.runTPM(func(tpm transport.TPM) error { return tpmdev.SetDAParameters(tpm, 3, 1000, 1000) })
		})
	}
}

// The error mapping of the two TPM answers a PIN can get, injected on the
// Unseal command: TPM_RC_AUTH_FAIL (session 1) and TPM_RC_LOCKOUT.
func TestPINErrorsInjected(t *testing.T) {
	tests := []struct {
		name string
		rc   tpm2.TPMRC
		want error
		not  error
	}{
		{"auth fail", tpm2.TPMRC(0x98e), tpmseal.ErrWrongPIN, tpmseal.ErrLockout},
		{"lockout", tpm2.TPMRCLockout, tpmseal.ErrLockout, tpmseal.ErrWrongPIN},
		{"other", tpm2.TPMRCIntegrity, tpm2.TPMRCIntegrity, tpmseal.ErrWrongPIN},
	}
	inj := tpmfault.New()
	f := newFixture(t, "sim", inj.Wrap)
	pin := []byte("1357")
	b, err := tpmseal.Seal(context.Background(), f.tpm, randomSeed(t), tpmseal.SealOptions{Name: "inj", PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := tpmseal.Seal(context.Background(), f.tpm, randomSeed(t), tpmseal.SealOptions{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			armed := inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Code(tt.rc)))
			_, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{PIN: pin})
			if inj.Fired(armed) != 1 || !errors.Is(err, tt.want) || errors.Is(err, tt.not) {
				t.Errorf("unseal = %v, want %v and not %v", err, tt.want, tt.not)
			}
			// Without a PIN there is no PIN to blame.
			armed = inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Code(tt.rc)))
			_, err = unsealWith(t, f.tpm, plain, tpmseal.UnsealOptions{})
			if inj.Fired(armed) != 1 || errors.Is(err, tpmseal.ErrWrongPIN) || errors.Is(err, tpmseal.ErrLockout) || !errors.Is(err, tt.rc) {
				t.Errorf("unseal of a blob without PIN = %v, want the bare TPM error", err)
			}
		})
	}
}

// A PIN whose SHA-256 has a zero byte unseals (see PINAuthValue), and the
// PIN, its authValue and the seed never cross the bus in clear.
func TestPINNeverOnTheBus(t *testing.T) {
	var zeroPIN []byte
	for i := 0; zeroPIN == nil; i++ {
		p := []byte("zero-" + strings.Repeat("z", i))
		if h := sha256.Sum256(p); bytes.IndexByte(h[:], 0) >= 0 && bytes.IndexByte(h[:], 0) < 31 {
			zeroPIN = p
		}
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var rec *tpmtrace.Recorder
			f := newFixture(t, kind, func(next transport.TPM) transport.TPM { rec = tpmtrace.NewRecorder(next); return rec })
			key := newPolicyKey(t)
			seed := randomSeed(t)
			b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "bus", PCRs: []int{0, 7}, PIN: zeroPIN, Signer: &key.PublicKey})
			if err != nil {
				t.Fatal(err)
			}
			policies := []*sealstore.SignedPolicy{sign(t, key, f.readPCRs(0, 7), "")}
			if got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{PIN: zeroPIN, Policies: policies}); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("unseal with a PIN whose SHA-256 has a zero byte: %v", err)
			}
			raw := sha256.Sum256(zeroPIN)
			for name, secret := range map[string][]byte{
				"PIN": zeroPIN, "authValue": tpmseal.PINAuthValue(zeroPIN), "SHA-256 of the PIN": raw[:], "seed": seed,
			} {
				for i := 0; i+8 <= len(secret); i++ {
					if rec.Contains(secret[i : i+8]) {
						t.Fatalf("%s bytes %d-%d crossed the TPM bus in clear", name, i, i+8)
					}
				}
			}
			if !rec.Contains(policies[0].R) {
				t.Fatal("the recorder missed the signature sent to VerifySignature")
			}
			f.runTPM(tpmdev.ResetLockout)
		})
	}
}

// Failed unseals of every kind leave nothing loaded: only the SRK remains.
func TestFailedPolicyUnsealsLeakNothing(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind, nil)
			ctx := context.Background()
			key := newPolicyKey(t)
			pin := []byte("9999")
			signed, err := tpmseal.Seal(ctx, f.tpm, randomSeed(t), tpmseal.SealOptions{Name: "s", PCRs: []int{16}, Signer: &key.PublicKey, PIN: pin})
			if err != nil {
				t.Fatal(err)
			}
			good := sign(t, key, f.readPCRs(16), "")
			forged := *good
			forged.R = bytes.Clone(good.R)
			forged.R[0] ^= 1 // rejected in software, never sent
			for i := 0; i < 10; i++ {
				if _, err := unsealWith(t, f.tpm, signed, tpmseal.UnsealOptions{PIN: pin, Policies: []*sealstore.SignedPolicy{&forged}}); !errors.Is(err, sealstore.ErrNoSignedPolicy) {
					t.Fatalf("attempt %d: %v; want ErrNoSignedPolicy", i, err)
				}
			}
			for i := 0; i < 2; i++ {
				if _, err := unsealWith(t, f.tpm, signed, tpmseal.UnsealOptions{PIN: []byte("0000"), Policies: []*sealstore.SignedPolicy{good}}); !errors.Is(err, tpmseal.ErrWrongPIN) {
					t.Fatalf("wrong PIN %d: %v", i, err)
				}
			}
			f.extend(16)
			for i := 0; i < 5; i++ {
				if _, err := unsealWith(t, f.tpm, signed, tpmseal.UnsealOptions{PIN: pin, Policies: []*sealstore.SignedPolicy{good}}); !errors.Is(err, sealstore.ErrNoSignedPolicy) {
					t.Fatalf("after the change %d: %v", i, err)
				}
			}
			f.runTPM(func(tpm transport.TPM) error {
				for _, first := range []tpm2.TPMHandle{0x02000000, 0x03000000, 0x80000000} {
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
					if want := map[tpm2.TPMHandle]int{0x80000000: 1}[first]; len(ours) != want {
						t.Errorf("handles of type %#x left loaded: %#x; want %d", first>>24, ours, want)
					}
				}
				return tpmdev.ResetLockout(tpm)
			})
		})
	}
}

// What a cold unseal costs, per kind of policy.
func TestPolicyCommandCounts(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var c *tpmtrace.Counter
			f := newFixture(t, kind, func(next transport.TPM) transport.TPM { c = tpmtrace.NewCounter(next); return c })
			ctx := context.Background()
			key := newPolicyKey(t)
			pin := []byte("4321")
			policies := []*sealstore.SignedPolicy{sign(t, key, f.readPCRs(0, 7), "")}
			tests := []struct {
				name string
				opts tpmseal.SealOptions
				want []tpm2.TPMCC
			}{
				{"pcr+pin", tpmseal.SealOptions{Name: "a", PIN: pin}, []tpm2.TPMCC{
					tpm2.TPMCCLoad, tpm2.TPMCCStartAuthSession, tpm2.TPMCCPolicyPCR, tpm2.TPMCCPolicyAuthValue, tpm2.TPMCCUnseal, tpm2.TPMCCFlushContext}},
				{"signed", tpmseal.SealOptions{Name: "b", Signer: &key.PublicKey}, []tpm2.TPMCC{
					tpm2.TPMCCPCRRead, tpm2.TPMCCLoadExternal, tpm2.TPMCCVerifySignature, tpm2.TPMCCFlushContext,
					tpm2.TPMCCLoad, tpm2.TPMCCStartAuthSession, tpm2.TPMCCPolicyPCR, tpm2.TPMCCPolicyAuthorize, tpm2.TPMCCUnseal, tpm2.TPMCCFlushContext}},
				{"signed+pin", tpmseal.SealOptions{Name: "c", Signer: &key.PublicKey, PIN: pin}, []tpm2.TPMCC{
					tpm2.TPMCCPCRRead, tpm2.TPMCCLoadExternal, tpm2.TPMCCVerifySignature, tpm2.TPMCCFlushContext,
					tpm2.TPMCCLoad, tpm2.TPMCCStartAuthSession, tpm2.TPMCCPolicyPCR, tpm2.TPMCCPolicyAuthorize, tpm2.TPMCCPolicyAuthValue, tpm2.TPMCCUnseal, tpm2.TPMCCFlushContext}},
			}
			for _, tt := range tests {
				b, err := tpmseal.Generate(ctx, f.tpm, tt.opts)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{PIN: pin, Policies: policies}); err != nil {
					t.Fatal(err)
				}
				before, total := c.Snapshot(), c.Total()
				start := time.Now()
				if _, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{PIN: pin, Policies: policies}); err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				after := c.Snapshot()
				t.Logf("%s %s: one cold unseal = %d TPM commands, %v", kind, tt.name, c.Total()-total, took.Round(10*time.Microsecond))
				want := map[tpm2.TPMCC]int{}
				for _, cc := range tt.want {
					want[cc]++
				}
				if n := c.Total() - total; n != len(tt.want) {
					t.Errorf("%s: %d commands, want %d", tt.name, n, len(tt.want))
				}
				for cc, n := range want {
					if after[cc]-before[cc] != n {
						t.Errorf("%s: %v ran %d times, want %d", tt.name, cc, after[cc]-before[cc], n)
					}
				}
			}
		})
	}
}

// If the PCRs move between reading them and TPM2_PolicyAuthorize, the TPM
// answers TPM_RC_VALUE for approvedPolicy: the unseal starts over (a few
// times), and every attempt flushes what it loaded.
func TestSignedPolicyRetriesWhenPCRsMove(t *testing.T) {
	// TPM_RC_VALUE (0x084) | TPM_RC_P (0x040) | parameter 1 (0x100).
	const valueParam1 = tpm2.TPMRC(0x1c4)
	inj := tpmfault.New()
	f := newFixture(t, "sim", inj.Wrap)
	key := newPolicyKey(t)
	seed := randomSeed(t)
	b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: "race", PCRs: []int{7}, Signer: &key.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	policies := []*sealstore.SignedPolicy{sign(t, key, f.readPCRs(7), "")}
	tests := []struct {
		name  string
		count int
		ok    bool
	}{
		{"once", 1, true},
		{"three times", 3, true},
		{"always", tpmfault.Forever, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			armed := inj.Add(tpmfault.Rule{Command: tpm2.TPMCCPolicyAuthorize, Count: tt.count, Fault: tpmfault.Code(valueParam1)})
			got, err := unsealWith(t, f.tpm, b, tpmseal.UnsealOptions{Policies: policies})
			inj.Clear()
			if tt.ok && (err != nil || !bytes.Equal(got, seed)) {
				t.Errorf("unseal = %v, want the seed after %d retries", err, tt.count)
			}
			if !tt.ok && (err == nil || !errors.Is(err, tpm2.TPMRCValue)) {
				t.Errorf("unseal = %v, want TPM_RC_VALUE after the retries", err)
			}
			if n := inj.Fired(armed); !tt.ok && n != 4 || tt.ok && n != tt.count {
				t.Errorf("PolicyAuthorize failed %d times", n)
			}
			f.runTPM(func(tpm transport.TPM) error {
				for _, first := range []tpm2.TPMHandle{0x02000000, 0x03000000, 0x80000000} {
					rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tpm)
					if err != nil {
						return err
					}
					hs, _ := rsp.CapabilityData.Data.Handles()
					n := 0
					for _, h := range hs.Handle {
						if h>>24 == first>>24 {
							n++
						}
					}
					if want := map[tpm2.TPMHandle]int{0x80000000: 1}[first]; n != want {
						t.Errorf("%d handles of type %#x left loaded, want %d", n, first>>24, want)
					}
				}
				return nil
			})
		})
	}
}
