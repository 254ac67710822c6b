package tpmdev

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/swtpmtest"
)

// openDATest opens the TPM of kind ("sim" or "swtpm") for a test.
func openDATest(t *testing.T, kind string) *TPM {
	t.Helper()
	if kind == "sim" {
		return openSimT(t, nil)
	}
	sw := swtpmtest.Start(t)
	spec, err := ParseSpec(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	tpm, err := Open(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

// daProtectedKey creates a primary ECC signing key with password auth,
// dictionary-attack protected (noDA clear), and returns its handle.
func daProtectedKey(t *testing.T, tp transport.TPM, auth []byte) tpm2.NamedHandle {
	t.Helper()
	tmpl := tpm2.ECCSRKTemplate
	tmpl.ObjectAttributes = tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true,
	}
	tmpl.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InSensitive:   tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: auth}}},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp) })
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
}

// sign uses key with password auth.
func sign(tp transport.TPM, key tpm2.NamedHandle, auth []byte) error {
	_, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: key.Handle, Name: key.Name, Auth: tpm2.PasswordAuth(auth)},
		Digest:    tpm2.TPM2BDigest{Buffer: make([]byte, 32)},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(tp)
	return err
}

// The dictionary-attack counter counts failed authorizations of a
// DA-protected object; at the threshold the TPM locks out, even the right
// password fails with TPM_RC_LOCKOUT, until the lockout is reset.
func TestLockoutCounter(t *testing.T) {
	for _, kind := range []string{"sim", "swtpm"} {
		t.Run(kind, func(t *testing.T) {
			tpm := openDATest(t, kind)
			right, wrong := []byte("right"), []byte("wrong")
			err := tpm.Run(context.Background(), func(tp transport.TPM) error {
				st, err := ReadDA(tp)
				if err != nil {
					return err
				}
				// Both come with DA protection on: 3 tries, one
				// forgotten every 1000 s.
				if want := (DAState{MaxTries: 3, RecoveryTime: 1000, LockoutRecovery: 1000}); st != want {
					t.Errorf("initial DA state %+v, want %+v", st, want)
				}
				if err := SetDAParameters(tp, 2, 1000, 1000); err != nil {
					return err
				}
				key := daProtectedKey(t, tp, right)
				steps := []struct {
					auth      []byte
					wantRC    tpm2.TPMRC // 0: success
					counter   uint32
					inLockout bool
				}{
					{right, 0, 0, false},
					{wrong, tpm2.TPMRCAuthFail, 1, false},
					{right, 0, 1, false}, // a success does not forgive
					{wrong, tpm2.TPMRCAuthFail, 2, true},
					{right, tpm2.TPMRCLockout, 2, true},
					{wrong, tpm2.TPMRCLockout, 2, true}, // not counted in lockout
				}
				for i, s := range steps {
					err := sign(tp, key, s.auth)
					switch {
					case s.wantRC == 0 && err != nil:
						t.Errorf("step %d: %v, want success", i, err)
					case s.wantRC != 0 && !errors.Is(err, s.wantRC):
						t.Errorf("step %d: %v, want %v", i, err, s.wantRC)
					}
					counter, max, err := LockoutCounter(tp)
					if err != nil {
						return err
					}
					st, err := ReadDA(tp)
					if err != nil {
						return err
					}
					if counter != s.counter || max != 2 || st.InLockout != s.inLockout {
						t.Errorf("step %d: counter %d of %d, in lockout %v; want %d of 2, %v", i, counter, max, st.InLockout, s.counter, s.inLockout)
					}
				}
				if err := ResetLockout(tp); err != nil {
					return err
				}
				if st, err := ReadDA(tp); err != nil || st.Counter != 0 || st.InLockout {
					t.Errorf("after reset: %+v, %v; want counter 0, no lockout", st, err)
				}
				if err := sign(tp, key, right); err != nil {
					t.Errorf("right password after reset: %v", err)
				}
				return SetDAParameters(tp, 3, 1000, 1000)
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// fixedResponse answers every command with rsp and keeps the last command.
type fixedResponse struct {
	rsp  []byte
	sent []byte
}

func (f *fixedResponse) Send(cmd []byte) ([]byte, error) {
	f.sent = bytes.Clone(cmd)
	return f.rsp, nil
}

func TestLockoutCommands(t *testing.T) {
	// TPM2_DictionaryAttackParameters(maxTries 5, recovery 60, lockout
	// recovery 600) and TPM2_DictionaryAttackLockReset, by the book.
	const (
		params = "8002 00000027 0000013a 4000000a 00000009 40000009 0000 00 0000 00000005 0000003c 00000258"
		reset  = "8002 0000001b 00000139 4000000a 00000009 40000009 0000 00 0000"
	)
	tests := []struct {
		name    string
		run     func(transport.TPM) error
		rsp     []byte
		wantCmd string
		wantErr string // "" for success
	}{
		{"params", func(tp transport.TPM) error { return SetDAParameters(tp, 5, 60, 600) }, response(tpm2.TPMRCSuccess), params, ""},
		{"reset", ResetLockout, response(tpm2.TPMRCSuccess), reset, ""},
		{"bad auth", ResetLockout, response(tpm2.TPMRCBadAuth), reset, "tpmdev: reset dictionary-attack lockout: TPM_RC_BAD_AUTH"},
		{"params lockout", func(tp transport.TPM) error { return SetDAParameters(tp, 5, 60, 600) }, response(tpm2.TPMRCLockout), params, "tpmdev: set dictionary-attack parameters: TPM_RC_LOCKOUT"},
		{"short", ResetLockout, []byte{0x80, 0x01, 0, 0}, reset, "shorter than a header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fixedResponse{rsp: tt.rsp}
			err := tt.run(f)
			if want, _ := hex.DecodeString(strings.ReplaceAll(tt.wantCmd, " ", "")); !bytes.Equal(f.sent, want) {
				t.Errorf("sent %x, want %x", f.sent, want)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
