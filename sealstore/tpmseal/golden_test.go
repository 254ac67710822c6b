package tpmseal_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmsim"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

var updateGolden = flag.Bool("update-golden", false, "write the golden files of ../testdata/blobs that are missing (delete one to regenerate it), sealing with the committed simulator seed")

// goldenPIN is the PIN of ../testdata/blobs/pin.sealed.
const goldenPIN = "golden-pin"

// goldenCase is one golden blob: NAME.sealed and NAME.pub in
// ../testdata/blobs.
type goldenCase struct {
	name    string
	comment string
	opts    func(t *testing.T) tpmseal.SealOptions
	unseal  tpmseal.UnsealOptions
	check   func(t *testing.T, b *sealstore.Blob)
}

// The golden blobs were sealed by the simulator whose seed is committed
// beside them (../testdata/blobs/sim-seed), to PCRs 0 and 7 at their
// power-on values. Any simulator started from that seed is the same TPM,
// so the test proves the on-disk formats and the TPM side together: the
// committed bytes parse, re-encode to the same bytes, and unseal to a
// seed whose public key is the committed one.
//
//   - work.sealed: PolicyPCR (kind byte 1);
//   - signed.sealed: PolicyAuthorizedPCR (kind 2) with the policy key
//     policy-key.pem, unsealing with the signed policy in policies/;
//   - pin.sealed: PolicyPCR with the PIN "golden-pin" (kind 0x81).
func TestGoldenBlob(t *testing.T) {
	key := goldenPolicyKey(t)
	policy := goldenSignedPolicy(t, key)
	cases := []goldenCase{
		{
			name: "work", comment: "golden@icn-agent",
			opts: func(*testing.T) tpmseal.SealOptions { return tpmseal.SealOptions{} },
			check: func(t *testing.T, b *sealstore.Blob) {
				if b.Policy.Kind != sealstore.PolicyPCR || b.Policy.PIN {
					t.Errorf("policy %v, PIN %v", b.Policy.Kind, b.Policy.PIN)
				}
			},
		},
		{
			name: "signed", comment: "signed@icn-agent",
			opts: func(*testing.T) tpmseal.SealOptions {
				return tpmseal.SealOptions{Signer: &key.PublicKey}
			},
			unseal: tpmseal.UnsealOptions{Policies: []*sealstore.SignedPolicy{policy}},
			check: func(t *testing.T, b *sealstore.Blob) {
				k, err := b.Policy.SignerKey()
				if err != nil || b.Policy.Kind != sealstore.PolicyAuthorizedPCR || b.Policy.PIN || b.Policy.HasValues() {
					t.Fatalf("policy %+v (%v)", b.Policy, err)
				}
				if !bytes.Equal(k.Name, policy.Key.Name) {
					t.Errorf("blob's policy key %s, committed key %s", k.ID(), policy.Key.ID())
				}
			},
		},
		{
			name: "pin", comment: "pin@icn-agent",
			opts: func(*testing.T) tpmseal.SealOptions {
				return tpmseal.SealOptions{PIN: []byte(goldenPIN)}
			},
			unseal: tpmseal.UnsealOptions{PIN: []byte(goldenPIN)},
			check: func(t *testing.T, b *sealstore.Blob) {
				if b.Policy.Kind != sealstore.PolicyPCR || !b.Policy.PIN {
					t.Errorf("policy %v, PIN %v", b.Policy.Kind, b.Policy.PIN)
				}
			},
		},
	}
	tpm := openGoldenTPM(t)
	for _, gc := range cases {
		t.Run(gc.name, func(t *testing.T) {
			sealedPath := filepath.Join("../../testdata/blobs", gc.name+".sealed")
			pubPath := filepath.Join("../../testdata/blobs", gc.name+".pub")
			if _, err := os.Stat(sealedPath); *updateGolden && errors.Is(err, os.ErrNotExist) {
				opts := gc.opts(t)
				opts.Name, opts.Comment = gc.name, gc.comment
				b, err := tpmseal.Generate(context.Background(), tpm, opts)
				if err != nil {
					t.Fatal(err)
				}
				writeGolden(t, sealedPath, mustMarshalBlob(t, b))
				writeGolden(t, pubPath, b.AuthorizedKey())
			}
			data := readFile(t, sealedPath)
			wantPub := readFile(t, pubPath)
			b, err := sealstore.ParseBlob(data)
			if err != nil {
				t.Fatal(err)
			}
			if b.Name != gc.name || b.Comment != gc.comment || !slices.Equal(b.Policy.Indexes(), []int{0, 7}) {
				t.Errorf("golden blob fields: name %q comment %q pcrs %v", b.Name, b.Comment, b.Policy.Indexes())
			}
			gc.check(t, b)
			if !bytes.Equal(b.AuthorizedKey(), wantPub) {
				t.Errorf("golden public key line:\n%s\nwant\n%s", b.AuthorizedKey(), wantPub)
			}
			if again := mustMarshalBlob(t, b); !bytes.Equal(again, data) {
				t.Fatalf("re-encoding the golden blob changed it")
			}
			got := make([]byte, sealstore.SeedSize)
			if err := tpmseal.UnsealWith(context.Background(), tpm, b, got, gc.unseal); err != nil {
				t.Fatal(err)
			}
			pub, err := sealstore.PublicKey(got)
			if err != nil || !bytes.Equal(pub.Marshal(), b.PublicKey.Marshal()) {
				t.Fatalf("golden blob unsealed to a seed of another key (%v)", err)
			}
			if b.Policy.Kind == sealstore.PolicyAuthorizedPCR {
				// Without the signed policy it names what to sign: the
				// PolicyPCR digest of PCRs 0 and 7 all-zero.
				err := tpmseal.UnsealWith(context.Background(), tpm, b, got, tpmseal.UnsealOptions{})
				zero := strings.TrimSpace(string(readFile(t, "../../testdata/policy/pcr-0-7-zero.hex")))
				if !errors.Is(err, sealstore.ErrNoSignedPolicy) || !strings.Contains(err.Error(), zero) {
					t.Errorf("unseal without the signed policy = %v, want ErrNoSignedPolicy naming digest %s", err, zero)
				}
			}
			if b.Policy.PIN {
				err := tpmseal.UnsealWith(context.Background(), tpm, b, got, tpmseal.UnsealOptions{PIN: []byte("not-" + goldenPIN)})
				if !errors.Is(err, tpmseal.ErrWrongPIN) {
					t.Errorf("unseal with a wrong PIN = %v, want ErrWrongPIN", err)
				}
			}
		})
	}
}

// TestGoldenSignedPolicy checks the committed signed policy file: it
// parses, re-encodes to the same bytes, approves PCRs 0 and 7 all-zero
// (the digest committed in testdata/policy/pcr-0-7-zero.hex), is signed by
// the committed key, and signing again gives the same file (RFC 6979).
func TestGoldenSignedPolicy(t *testing.T) {
	key := goldenPolicyKey(t)
	p := goldenSignedPolicy(t, key)
	path := filepath.Join("../../testdata/blobs/policies", p.FileName())
	data := readFile(t, path)
	again, err := p.Marshal()
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("signing the golden values again gave another file than %s (%v)", path, err)
	}
	parsed, err := sealstore.ParseSignedPolicy(data)
	if err != nil {
		t.Fatal(err)
	}
	zero, err := hex.DecodeString(strings.TrimSpace(string(readFile(t, "../../testdata/policy/pcr-0-7-zero.hex"))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.Digest, zero) || !slices.Equal(parsed.Indexes(), []int{0, 7}) || parsed.Comment != "golden power-on values" {
		t.Errorf("golden policy: digest %x pcrs %v comment %q", parsed.Digest, parsed.Indexes(), parsed.Comment)
	}
	pubKey, err := sealstore.ParsePolicyKeyPEM(readFile(t, "../../testdata/blobs/policy-key.pem.pub"))
	if err != nil || !bytes.Equal(pubKey.Name, parsed.Key.Name) {
		t.Errorf("policy-key.pem.pub is not the signer (%v)", err)
	}
	if want := hex.EncodeToString(zero) + "-" + pubKey.ID() + ".policy"; filepath.Base(path) != want {
		t.Errorf("file name %s, want %s", filepath.Base(path), want)
	}
}

// goldenPolicyKey reads (with -update-golden, first writes) the committed
// policy signing key, a test key whose private half is public on purpose.
func goldenPolicyKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	const path = "../../testdata/blobs/policy-key.pem"
	if _, err := os.Stat(path); *updateGolden && errors.Is(err, os.ErrNotExist) {
		k := newPolicyKey(t)
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writeGolden(t, path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		pk, err := sealstore.NewPolicyKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		writeGolden(t, path+".pub", pk.PEM())
	}
	block, _ := pem.Decode(readFile(t, path))
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

// goldenSignedPolicy signs PCRs 0 and 7 all-zero (the simulator's power-on
// values) with key, and with -update-golden writes the file if missing.
func goldenSignedPolicy(t *testing.T, key *ecdsa.PrivateKey) *sealstore.SignedPolicy {
	t.Helper()
	zero := make([]byte, 32)
	p, err := sealstore.SignPolicy(key, []sealstore.PCRValue{{Index: 0, Value: zero}, {Index: 7, Value: zero}},
		"golden power-on values", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("../../testdata/blobs/policies", p.FileName())
	if _, err := os.Stat(path); *updateGolden && errors.Is(err, os.ErrNotExist) {
		data, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		writeGolden(t, path, data)
	}
	return p
}

func openGoldenTPM(t *testing.T) *tpmdev.TPM {
	t.Helper()
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, tpmsim.SeedFile), readFile(t, "../../testdata/blobs/sim-seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeGolden(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

func mustMarshalBlob(t *testing.T, b *sealstore.Blob) []byte {
	t.Helper()
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}
