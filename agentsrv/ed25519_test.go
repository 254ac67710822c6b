package agentsrv

import (
	"context"
	"io"
	"log/slog"
	"time"

	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"golang.org/x/crypto/ssh/agent"
	"testing"

	"github.com/icn/icn-agent/internal/secmem"
)

func TestEdSignRFC8032(t *testing.T) {
	// RFC 8032 section 7.1, tests 1 to 3.
	tests := []struct{ seed, pub, msg, sig string }{
		{
			"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
			"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
			"",
			"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
		},
		{
			"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
			"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
			"72",
			"92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
		},
		{
			"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
			"fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
			"af82",
			"6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
		},
	}
	for i, tc := range tests {
		seed, _ := hex.DecodeString(tc.seed)
		msg, _ := hex.DecodeString(tc.msg)
		var pub [32]byte
		edPublicKey(&pub, seed)
		if got := hex.EncodeToString(pub[:]); got != tc.pub {
			t.Errorf("test %d: public key %s, want %s", i+1, got, tc.pub)
		}
		var sig [64]byte
		edSign(&sig, append(seed, pub[:]...), msg)
		if got := hex.EncodeToString(sig[:]); got != tc.sig {
			t.Errorf("test %d: signature %s, want %s", i+1, got, tc.sig)
		}
	}
}

// edSign must agree with crypto/ed25519 byte for byte (Ed25519 signatures
// are deterministic), for keys in locked memory as the agent holds them.
func TestEdSignMatchesStdlib(t *testing.T) {
	buf, err := secmem.New(ed25519.PrivateKeySize)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Destroy()
	for i := range 200 {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		var derived [32]byte
		edPublicKey(&derived, priv.Seed())
		if !bytes.Equal(derived[:], pub) {
			t.Fatalf("key %d: derived public key differs", i)
		}
		copy(buf.Bytes(), priv)
		msg := make([]byte, i*7) // 0 to 1393 bytes: across SHA-512 block boundaries
		rand.Read(msg)
		var sig [64]byte
		edSign(&sig, buf.Bytes(), msg)
		if want := ed25519.Sign(priv, msg); !bytes.Equal(sig[:], want) {
			t.Fatalf("key %d, %d-byte message: signature differs from crypto/ed25519", i, len(msg))
		}
		if !ed25519.Verify(pub, msg, sig[:]) {
			t.Fatalf("key %d: signature does not verify", i)
		}
	}
}

// A warm signature allocates only the signature: one object holding the
// ssh.Signature and its blob.
func TestWarmSignAllocations(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	ts := startServer(t, Config{Unsealer: f, AutoLockTimeout: time.Hour}, Identity{Blob: k.blob})
	mustSign(t, ts.dial(t), k.pub, []byte("warm up"))
	e := ts.sealedEntry(t, "id")
	data := make([]byte, 300)
	now := ts.wallNow()
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := e.trySign(now, data, 0); !ok {
			t.Fatal("trySign missed a cached seed")
		}
	})
	if allocs != 1 {
		t.Errorf("warm signature: %v allocations, want 1", allocs)
	}

	// The whole request path, from the public key blob to the signature,
	// with logging at Info as in production.
	c := &conn{s: ts.Server, ctx: context.Background(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	key := &agent.Key{Format: k.pub.Type(), Blob: k.pub.Marshal()}
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := c.SignWithFlags(key, data, 0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 1 {
		t.Errorf("warm SignWithFlags: %v allocations, want 1", allocs)
	}
}
