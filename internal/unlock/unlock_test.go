package unlock

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/internal/tpmdev"
	_ "github.com/icn/icn-agent/internal/tpmsim"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// fakeAskpass is an SSH_ASKPASS program that records its prompts and
// answers with the content of a file, or exits 1 if that file is missing.
type fakeAskpass struct {
	t    *testing.T
	dir  string
	prog string
}

func newFakeAskpass(t *testing.T) *fakeAskpass {
	dir := t.TempDir()
	prog := filepath.Join(dir, "askpass")
	script := "#!/bin/sh\nprintf '%s\\n' \"$1\" >> " + filepath.Join(dir, "prompts") + "\n" +
		"[ -f " + filepath.Join(dir, "answer") + " ] || exit 1\ncat " + filepath.Join(dir, "answer") + "\n"
	if err := os.WriteFile(prog, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return &fakeAskpass{t: t, dir: dir, prog: prog}
}

// answer sets what the program prints; "" makes it exit 1 (cancel).
func (a *fakeAskpass) answer(s string) {
	path := filepath.Join(a.dir, "answer")
	if s == "" {
		os.Remove(path)
		return
	}
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		a.t.Fatal(err)
	}
}

// prompts returns and forgets the prompts shown so far.
func (a *fakeAskpass) prompts() []string {
	path := filepath.Join(a.dir, "prompts")
	data, _ := os.ReadFile(path)
	os.Remove(path)
	if len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func openTestTPM(t *testing.T, kind string) *tpmdev.TPM {
	t.Helper()
	spec := tpmdev.Spec{Kind: tpmdev.KindSim}
	if kind == "swtpm" {
		var err error
		if spec, err = tpmdev.ParseSpec(swtpmtest.Start(t).Spec()); err != nil {
			t.Fatal(err)
		}
	}
	tpm, err := tpmdev.Open(context.Background(), spec, tpmdev.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

// The agent's unsealer asks for a PIN through SSH_ASKPASS only for PIN
// identities, only when the policy can be satisfied, once per unseal (a
// wrong PIN is reported, not retried), and finds signed policies in the
// store.
func TestPINUnsealer(t *testing.T) {
	for _, kind := range []string{"sim", "swtpm"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			tpm := openTestTPM(t, kind)
			store, err := sealstore.Open(filepath.Join(t.TempDir(), "store"))
			if err != nil {
				t.Fatal(err)
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			pin := []byte("open sesame")
			seal := func(name string, opts tpmseal.SealOptions) *sealstore.Blob {
				opts.Name = name
				b, err := tpmseal.Generate(ctx, tpm, opts)
				if err != nil {
					t.Fatal(err)
				}
				if err := store.Create(b); err != nil {
					t.Fatal(err)
				}
				return b
			}
			plain := seal("plain", tpmseal.SealOptions{})
			pinned := seal("pinned", tpmseal.SealOptions{PIN: pin})
			moved := seal("moved", tpmseal.SealOptions{PIN: pin, PCRs: []int{7, 16}})
			signed := seal("signed", tpmseal.SealOptions{PIN: pin, Signer: &key.PublicKey})
			err = tpm.Run(ctx, func(tp transport.TPM) error { return tpmdev.ExtendPCR(tp, 16, []byte("moved")) })
			if err != nil {
				t.Fatal(err)
			}
			signPolicy := func() {
				var values [][]byte
				err := tpm.Run(ctx, func(tp transport.TPM) error {
					var err error
					values, _, err = tpmdev.ReadPCRs(tp, tpm2.TPMAlgSHA256, []int{0, 7})
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				p, err := sealstore.SignPolicy(key, []sealstore.PCRValue{{Index: 0, Value: values[0]}, {Index: 7, Value: values[1]}}, "", time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := store.AddSignedPolicy(p); err != nil {
					t.Fatal(err)
				}
			}

			ask := newFakeAskpass(t)
			pokes := 0
			withAskpass := &Unsealer{TPM: tpm, Store: store, Askpass: ask.prog, AfterPIN: func() { pokes++ }}
			without := &Unsealer{TPM: tpm, Store: store, AfterPIN: func() { pokes++ }}
			steps := []struct {
				name    string
				u       *Unsealer
				b       *sealstore.Blob
				answer  string
				before  func()
				wantErr string // "" to unseal
				prompts int
				counter uint32 // the DA counter after the step
				sent    string // a PIN sent by icn-agent add: UnsealWithPIN
			}{
				{"no PIN", without, plain, "", nil, "", 0, 0, ""},
				{"right PIN", withAskpass, pinned, string(pin), nil, "", 1, 0, ""},
				{"wrong PIN", withAskpass, pinned, "open sesamf", nil, "wrong PIN (TPM_RC_AUTH_FAIL", 1, 1, ""},
				{"cancelled", withAskpass, pinned, "", nil, "PIN entry cancelled", 1, 1, ""},
				{"no askpass", without, pinned, "", nil, "pinned is protected by a PIN: unlock: no program to ask for the PIN", 0, 1, ""},
				{"PCR moved: not asked", withAskpass, moved, string(pin), nil, "PCR 16 changed since it was sealed", 0, 1, ""},
				{"not signed: not asked", withAskpass, signed, string(pin), nil, "no policy signed by key", 0, 1, ""},
				{"signed", withAskpass, signed, string(pin), signPolicy, "", 1, 1, ""},
				{"signed, wrong PIN", withAskpass, signed, "1234", nil, "counted 2 failed PIN attempt(s) and locks every PIN-protected identity out at 3", 1, 2, ""},
				{"sent PIN", without, pinned, "", nil, "", 0, 2, string(pin)},
				{"sent wrong PIN", withAskpass, pinned, string(pin), nil, "counted 3 failed PIN attempt(s)", 0, 3, "open sesamf"},
				{"sent PIN, no PIN needed", without, plain, "", nil, "", 0, 3, "ignored"},
			}
			for _, s := range steps {
				if s.before != nil {
					s.before()
				}
				ask.answer(s.answer)
				dst := make([]byte, sealstore.SeedSize)
				pokesBefore := pokes
				var err error
				if s.sent != "" {
					err = s.u.UnsealWithPIN(ctx, s.b, []byte(s.sent), dst)
				} else {
					err = s.u.Unseal(ctx, s.b, dst)
				}
				if wantPokes := pokesBefore + map[bool]int{true: 1}[s.b.Policy.PIN]; pokes != wantPokes {
					t.Errorf("%s: AfterPIN called %d times, want %d", s.name, pokes-pokesBefore, wantPokes-pokesBefore)
				}
				switch {
				case s.wantErr == "" && err != nil:
					t.Errorf("%s: %v", s.name, err)
				case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
					t.Errorf("%s: error %v, want it to contain %q", s.name, err, s.wantErr)
				case s.wantErr == "":
					if pub, err := sealstore.PublicKey(dst); err != nil || string(pub.Marshal()) != string(s.b.PublicKey.Marshal()) {
						t.Errorf("%s: unsealed another key (%v)", s.name, err)
					}
				}
				prompts := ask.prompts()
				if len(prompts) != s.prompts {
					t.Errorf("%s: askpass ran %d times (%q), want %d", s.name, len(prompts), prompts, s.prompts)
				}
				for _, p := range prompts {
					if want := "Enter PIN for icn-agent identity " + s.b.Name + " (" + ssh.FingerprintSHA256(s.b.PublicKey) + "): "; p != want {
						t.Errorf("%s: prompt %q, want %q", s.name, p, want)
					}
				}
				if st, err := ReadDA(ctx, tpm); err != nil || st.Counter != s.counter {
					t.Errorf("%s: DA counter %d (%v), want %d", s.name, st.Counter, err, s.counter)
				}
			}
			if err := tpm.Run(ctx, tpmdev.ResetLockout); err != nil {
				t.Fatal(err)
			}
		})
	}
}
