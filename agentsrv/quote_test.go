package agentsrv

import (
	"context"
	"crypto/ed25519"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/sealstore"
)

// fakeAttester returns evidence carrying just the possession signature,
// made through the agent's own signing path.
type fakeAttester struct{ calls int }

func (f *fakeAttester) Quote(_ context.Context, b *sealstore.Blob, nonce []byte, extra []int, sign func([]byte) ([]byte, error)) (*attest.Evidence, error) {
	f.calls++
	msg := attest.PossessionMessage(nonce, []byte("quote"))
	sig, err := sign(msg)
	if err != nil {
		return nil, err
	}
	return &attest.Evidence{IdentityKey: b.PublicKey.Marshal(), Possession: sig, Attest: []byte("quote")}, nil
}

func TestQuoteExtension(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "work", "")
	fa := &fakeAttester{}
	ts := startServer(t, Config{Unsealer: f, Attester: fa}, Identity{Blob: k.blob})
	a := ts.dial(t)
	nonce := []byte("0123456789abcdef")

	// The reply does not parse as full evidence (the fake leaves out the
	// TPM parts), but the request reached the attester, which signed
	// through the agent: unsealing on the way.
	_, err := attest.RequestEvidence(a, k.pub, nonce, []int{16})
	if fa.calls != 1 || f.calls.Load() != 1 {
		t.Fatalf("attester calls %d, unseals %d (err %v); want 1 and 1", fa.calls, f.calls.Load(), err)
	}

	// Possession signatures verify under the identity's key.
	msg := attest.PossessionMessage(nonce, []byte("quote"))
	sig := mustSign(t, a, k.pub, msg)
	if !ed25519.Verify(k.priv.Public().(ed25519.PublicKey), msg, sig.Blob) {
		t.Fatal("possession signature does not verify")
	}

	other := newTestKey(t, nil, "other", "")
	tests := []struct {
		name  string
		key   ssh.PublicKey
		nonce []byte
		setup func()
	}{
		{"unknown identity", other.pub, nonce, nil},
		{"short nonce", k.pub, []byte("short"), nil},
		{"locked", k.pub, nonce, func() {
			if err := a.Lock([]byte("pass")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			before := fa.calls
			if _, err := attest.RequestEvidence(a, tt.key, tt.nonce, nil); err == nil {
				t.Fatal("quote succeeded")
			}
			if fa.calls != before {
				t.Fatal("a refused request reached the attester")
			}
		})
	}
}

func TestQuoteWithoutAttester(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "work", "")
	ts := startServer(t, Config{Unsealer: f}, Identity{Blob: k.blob})
	_, err := attest.RequestEvidence(ts.dial(t), k.pub, []byte("0123456789abcdef"), nil)
	if err == nil {
		t.Fatalf("quote without an attester = %v; want an error", err)
	}
}
