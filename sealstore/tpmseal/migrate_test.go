package tpmseal_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmtrace"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

func readSRK(t testing.TB, tpm tpmseal.TPM) *sealstore.SRKPublic {
	t.Helper()
	srk, err := tpmseal.ReadSRK(context.Background(), tpm)
	if err != nil {
		t.Fatal(err)
	}
	return srk
}

func unwrap(t testing.TB, tpm tpmseal.TPM, d *sealstore.Duplicate, n int) ([]byte, error) {
	t.Helper()
	dst := make([]byte, n)
	err := tpmseal.UnsealDuplicate(context.Background(), tpm, d, dst)
	return dst, err
}

// A seed sealed on one TPM moves to another, different TPM: the source
// unseals it and wraps it for the target's SRK, the target imports it and
// seals it again under its own PCR policy, and then signs with the same
// public key. A third TPM can do nothing with the wrapped object. The
// simulator is one instance per process, so two simulators (different
// seeds, hence different TPMs) are never open at once.
func TestMigrateBetweenTPMs(t *testing.T) {
	tests := []struct {
		name             string
		src, dst, third  string
		closeSrcForThird bool // the third TPM is a simulator like the source
	}{
		{name: "sim-to-swtpm", src: "sim", dst: "swtpm", third: "sim", closeSrcForThird: true},
		{name: "swtpm-to-sim", src: "swtpm", dst: "sim", third: "swtpm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			var rec *tpmtrace.Recorder
			dst := newFixture(t, tt.dst, func(next transport.TPM) transport.TPM { rec = tpmtrace.NewRecorder(next); return rec })
			dstSRK := readSRK(t, dst.tpm)

			// Source: seal, then (later, as "icn-agent migrate" does)
			// unseal and wrap for the target.
			if tt.dst == "sim" {
				dst.tpm.Close() // the source may need the simulator
			}
			src := newFixture(t, tt.src, nil)
			seed := randomSeed(t)
			b, err := tpmseal.Seal(ctx, src.tpm, seed, tpmseal.SealOptions{Name: "work", Comment: "me@example"})
			if err != nil {
				t.Fatal(err)
			}
			unsealed, err := unseal(t, src.tpm, b)
			if err != nil {
				t.Fatal(err)
			}
			srcSRK := readSRK(t, src.tpm)
			if bytes.Equal(srcSRK.Name, dstSRK.Name) {
				t.Fatal("source and target TPMs have the same SRK")
			}
			d, err := sealstore.NewDuplicate(dstSRK, unsealed)
			if err != nil {
				t.Fatal(err)
			}
			for _, part := range [][]byte{d.Public, d.Private, d.EncryptedSeed} {
				if bytes.Contains(part, seed) {
					t.Fatal("the wrapped object holds the seed in clear")
				}
			}
			if tt.closeSrcForThird {
				src.tpm.Close()
			}

			// A third TPM: refused before the TPM is asked, and, with
			// the target name forged to its own, by the TPM itself.
			third := newFixture(t, tt.third, nil)
			if _, err := unwrap(t, third.tpm, d, len(seed)); !errors.Is(err, sealstore.ErrNotForThisTPM) {
				t.Fatalf("unwrap on a third TPM = %v; want ErrNotForThisTPM", err)
			}
			forged := *d
			forged.ParentName = readSRK(t, third.tpm).Name
			_, err = unwrap(t, third.tpm, &forged, len(seed))
			if !errors.Is(err, sealstore.ErrDuplicateRejected) || !errors.Is(err, tpm2.TPMRCIntegrity) {
				t.Fatalf("import on a third TPM = %v; want ErrDuplicateRejected with TPM_RC_INTEGRITY", err)
			}
			third.tpm.Close()

			// Target: unwrap, reseal, unseal, sign.
			if tt.dst == "sim" {
				src.tpm.Close()
				dst.open()
			}
			got, err := unwrap(t, dst.tpm, d, len(seed))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, seed) {
				t.Fatal("the target unwrapped other bytes than the seed")
			}
			if rec.Contains(seed) {
				t.Fatal("the seed crossed the target's TPM bus in clear")
			}
			b2, err := tpmseal.Seal(ctx, dst.tpm, got, tpmseal.SealOptions{Name: "work", Comment: b.Comment})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b2.PublicKey.Marshal(), b.PublicKey.Marshal()) {
				t.Fatal("the identity has another public key on the target")
			}
			if bytes.Equal(b2.SRKName, b.SRKName) {
				t.Fatal("the resealed blob names the source's SRK")
			}
			final, err := unseal(t, dst.tpm, b2)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("signed on the target")
			sig := ed25519.Sign(ed25519.NewKeyFromSeed(final), msg)
			edpub := b.PublicKey.(ssh.CryptoPublicKey).CryptoPublicKey().(ed25519.PublicKey)
			if !ed25519.Verify(edpub, msg, sig) {
				t.Fatal("a signature made on the target does not verify with the source's public key")
			}
		})
	}
}

// The TPM checks the outer wrapper's HMAC over the encrypted sensitive and
// the object's Name: any change to the wrapped data or the public area is
// refused, never imported as something else.
func TestDuplicateTampering(t *testing.T) {
	f := newFixture(t, "swtpm", nil)
	srk := readSRK(t, f.tpm)
	data := randomSeed(t)
	d, err := sealstore.NewDuplicate(srk, data)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := unwrap(t, f.tpm, d, len(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("untampered: %v", err)
	}
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name   string
		mutate func(d *sealstore.Duplicate)
	}{
		{"encrypted sensitive", func(d *sealstore.Duplicate) { d.Private = flip(d.Private, len(d.Private)-1) }},
		{"hmac", func(d *sealstore.Duplicate) { d.Private = flip(d.Private, 4) }},
		{"unique field", func(d *sealstore.Duplicate) { d.Public = flip(d.Public, len(d.Public)-1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := *d
			tt.mutate(&bad)
			if err := bad.Check(); err != nil {
				t.Fatalf("Check = %v; the change should only be visible to the TPM", err)
			}
			_, err := unwrap(t, f.tpm, &bad, len(data))
			if !errors.Is(err, sealstore.ErrDuplicateRejected) || !errors.Is(err, tpm2.TPMRCIntegrity) {
				t.Fatalf("unwrap = %v; want ErrDuplicateRejected with TPM_RC_INTEGRITY", err)
			}
		})
	}
	// A different ephemeral point gives a different seed; it may not even
	// be on the curve. Either way the TPM refuses.
	bad := *d
	bad.EncryptedSeed = flip(d.EncryptedSeed, 10)
	if _, err := unwrap(t, f.tpm, &bad, len(data)); err == nil {
		t.Fatal("an altered encrypted seed was accepted")
	}
	// The TPM is still usable: nothing leaked.
	if got, err := unwrap(t, f.tpm, d, len(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the failures: %v", err)
	}
}

// The imported object's only use is TPM2_Unseal in a policy session: no
// password unseals it (userWithAuth is clear) and its policy cannot be
// satisfied for TPM2_Duplicate, so it can never leave the target.
func TestImportedObjectOnlyUnseals(t *testing.T) {
	f := newFixture(t, "sim", nil)
	d, err := sealstore.NewDuplicate(readSRK(t, f.tpm), randomSeed(t))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](d.Public)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](d.Private)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := tpm2.Unmarshal[tpm2.TPM2BEncryptedSecret](d.EncryptedSeed)
	if err != nil {
		t.Fatal(err)
	}
	err = f.tpm.RunWithSRK(context.Background(), func(tpm transport.TPM, srk *tpmdev.SRK) error {
		imp, err := tpm2.Import{ParentHandle: srk.AuthHandle(), ObjectPublic: *pub, Duplicate: *priv, InSymSeed: *seed}.Execute(tpm)
		if err != nil {
			return err
		}
		load, err := tpm2.Load{ParentHandle: srk.AuthHandle(), InPrivate: imp.OutPrivate, InPublic: *pub}.Execute(tpm)
		if err != nil {
			return err
		}
		defer tpm2.FlushContext{FlushHandle: load.ObjectHandle}.Execute(tpm)
		obj := tpm2.AuthHandle{Handle: load.ObjectHandle, Name: load.Name, Auth: tpm2.PasswordAuth(nil)}
		if _, err := (tpm2.Unseal{ItemHandle: obj}).Execute(tpm); !errors.Is(err, tpm2.TPMRCAuthUnavailable) {
			t.Errorf("password unseal = %v; want TPM_RC_AUTH_UNAVAILABLE", err)
		}
		obj.Auth = tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tpm transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
			_, err := tpm2.PolicyCommandCode{PolicySession: h, Code: tpm2.TPMCCDuplicate}.Execute(tpm)
			return err
		})
		_, err = tpm2.Duplicate{
			ObjectHandle:    obj,
			NewParentHandle: tpm2.NamedHandle{Handle: tpm2.TPMRHNull},
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(tpm)
		if !errors.Is(err, tpm2.TPMRCPolicyFail) {
			t.Errorf("duplicate = %v; want TPM_RC_POLICY_FAIL", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewSRKPublic(t *testing.T) {
	f := newFixture(t, "sim", nil)
	var real tpm2.TPMTPublic
	var realName []byte
	err := f.tpm.RunWithSRK(context.Background(), func(_ transport.TPM, srk *tpmdev.SRK) error {
		real, realName = srk.Public, srk.Name.Buffer
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := sealstore.NewSRKPublic(real)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Name, realName) {
		t.Fatalf("name %x; the TPM says %x", got.Name, realName)
	}

	tests := []struct {
		name   string
		mutate func(p *tpm2.TPMTPublic)
	}{
		{"RSA SRK template", func(p *tpm2.TPMTPublic) { *p = tpm2.RSASRKTemplate }},
		{"not restricted", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false }},
		{"signing key", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt, p.ObjectAttributes.SignEncrypt = false, true }},
		{"SHA-1 name", func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }},
		{"point off the curve", func(p *tpm2.TPMTPublic) {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{1}, 32)},
				Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{2}, 32)},
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := real
			tt.mutate(&p)
			if _, err := sealstore.NewSRKPublic(p); !errors.Is(err, sealstore.ErrNotSRK) {
				t.Fatalf("NewSRKPublic = %v; want ErrNotSRK", err)
			}
			if _, err := sealstore.NewDuplicate(&sealstore.SRKPublic{Public: p, Name: realName}, []byte("x")); !errors.Is(err, sealstore.ErrNotSRK) {
				t.Fatalf("NewDuplicate = %v; want ErrNotSRK", err)
			}
		})
	}
}

func TestDuplicateCheck(t *testing.T) {
	f := newFixture(t, "sim", nil)
	srk := readSRK(t, f.tpm)
	good, err := sealstore.NewDuplicate(srk, []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	userWithAuth := func() []byte {
		p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](good.Public)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := p.Contents()
		if err != nil {
			t.Fatal(err)
		}
		pub.ObjectAttributes.UserWithAuth = true
		return tpm2.Marshal(tpm2.New2B(*pub))
	}()
	tests := []struct {
		name   string
		mutate func(d *sealstore.Duplicate)
		want   string
	}{
		{"short parent name", func(d *sealstore.Duplicate) { d.ParentName = d.ParentName[:20] }, "target srk name"},
		{"userWithAuth", func(d *sealstore.Duplicate) { d.Public = userWithAuth }, "not a wrapped object as icn-agent makes it"},
		{"not keyedHash", func(d *sealstore.Duplicate) { d.Public = tpm2.Marshal(tpm2.New2B(tpm2.ECCSRKTemplate)) }, "not a SHA-256 keyedHash object"},
		{"private size", func(d *sealstore.Duplicate) { d.Private = d.Private[:len(d.Private)-1] }, "wrapped private: size field"},
		{"seed empty", func(d *sealstore.Duplicate) { d.EncryptedSeed = []byte{0, 0} }, "encrypted seed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := *good
			tt.mutate(&d)
			err := d.Check()
			if !errors.Is(err, sealstore.ErrMalformedBlob) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v; want ErrMalformedBlob mentioning %q", err, tt.want)
			}
			if err := tpmseal.UnsealDuplicate(context.Background(), f.tpm, &d, make([]byte, 4)); !errors.Is(err, sealstore.ErrMalformedBlob) {
				t.Fatalf("UnsealDuplicate = %v; want ErrMalformedBlob before the TPM is asked", err)
			}
		})
	}
	if _, err := sealstore.NewDuplicate(srk, make([]byte, sealstore.MaxDuplicateData+1)); err == nil {
		t.Fatal("NewDuplicate accepted more than MaxDuplicateData bytes")
	}
	if _, err := sealstore.NewDuplicate(srk, nil); err == nil {
		t.Fatal("NewDuplicate accepted no data")
	}
}
