package didkey

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// Vectors published with did:key implementations: the key in base58 and its did.
var vectors = []struct{ pubBase58, did string }{
	{"8HH5gYEeNc3z7PYXmd54d4x6qAfCNrqQqEB3nS7Zfu7K", "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th"},
	{"HrBXe7XnjMbscM1roSDTSMCcLNraetDQM9wSVjnzDxn3", "did:key:z6MkwJSaEMnE4u6LiqrZV1BJHSkc9x8S4mTm3ArNL1m19BZR"},
}

func TestKnownAnswers(t *testing.T) {
	for _, v := range vectors {
		pub, err := base58Decode(v.pubBase58)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			t.Fatalf("decode %s: %v (%d bytes)", v.pubBase58, err, len(pub))
		}
		if got := Encode(pub); got != v.did {
			t.Errorf("Encode = %s; want %s", got, v.did)
		}
		back, err := Decode(v.did)
		if err != nil || !bytes.Equal(back, pub) {
			t.Errorf("Decode(%s) = %x, %v; want %x", v.did, back, err, pub)
		}
	}
}

// The did:key of the Ed25519 key with the all-zero seed, as published.
func TestZeroSeed(t *testing.T) {
	pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if got, want := Encode(pub), "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"; got != want {
		t.Fatalf("Encode = %s; want %s", got, want)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, s := range []string{"", "did:key:", "did:key:z", "did:web:x", "did:key:z0OIl", "did:key:z6LShLeXRTzevtwcfehaGEzCMyL3bNsAeKCwcqwJxyCo63yE"} {
		if _, err := Decode(s); err == nil {
			t.Errorf("Decode(%q) succeeded", s)
		}
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add(bytes.Repeat([]byte{0xff}, 32))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != ed25519.PublicKeySize {
			return
		}
		got, err := Decode(Encode(b))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip of %x: %x, %v", b, got, err)
		}
	})
}
