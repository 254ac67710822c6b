package edlocked

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"runtime"
	"testing"
	"unsafe"

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
		PublicKey(&pub, seed)
		if got := hex.EncodeToString(pub[:]); got != tc.pub {
			t.Errorf("test %d: public key %s, want %s", i+1, got, tc.pub)
		}
		var sig [64]byte
		Sign(&sig, append(seed, pub[:]...), msg)
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
		PublicKey(&derived, priv.Seed())
		if !bytes.Equal(derived[:], pub) {
			t.Fatalf("key %d: derived public key differs", i)
		}
		copy(buf.Bytes(), priv)
		msg := make([]byte, i*7) // 0 to 1393 bytes: across SHA-512 block boundaries
		rand.Read(msg)
		var sig [64]byte
		Sign(&sig, buf.Bytes(), msg)
		if want := ed25519.Sign(priv, msg); !bytes.Equal(sig[:], want) {
			t.Fatalf("key %d, %d-byte message: signature differs from crypto/ed25519", i, len(msg))
		}
		if !ed25519.Verify(pub, msg, sig[:]) {
			t.Fatalf("key %d: signature does not verify", i)
		}
	}
}

// stackAddr returns an address in its own frame: it moves when the
// runtime moves the goroutine's stack.
//
//go:noinline
func stackAddr() uintptr {
	var b byte
	return uintptr(unsafe.Pointer(&b))
}

// stackMovesAtGC reports whether a garbage collection moves the stack of a
// goroutine that grew its stack with Scrub and then runs body's check at a
// shallow depth: the shrink Deep exists to prevent.
func stackMovesAtGC(deep bool) bool {
	moved := make(chan bool)
	go func() {
		check := func() {
			Scrub() // grow the stack well beyond what is in use below
			before := stackAddr()
			for range 3 {
				runtime.GC()
			}
			moved <- stackAddr() != before
		}
		if deep {
			Deep(check)
		} else {
			check()
		}
	}()
	return <-moved
}

// The control shows that the runtime does shrink (move) an idle goroutine's
// grown stack at a garbage collection; inside Deep it does not.
func TestDeepKeepsTheStack(t *testing.T) {
	if !stackMovesAtGC(false) {
		t.Fatal("control: a grown, mostly unused stack was not shrunk at GC; the test proves nothing here")
	}
	for i := range 20 {
		if stackMovesAtGC(true) {
			t.Fatalf("run %d: the stack moved at GC inside Deep", i)
		}
	}
}

// Signing allocates nothing: no derived value reaches the heap.
func TestSignAllocatesNothing(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 300)
	var sig [64]byte
	if n := testing.AllocsPerRun(100, func() { Sign(&sig, priv, msg) }); n != 0 {
		t.Errorf("Sign: %v allocations, want 0", n)
	}
	var pub [32]byte
	if n := testing.AllocsPerRun(100, func() { PublicKey(&pub, priv.Seed()) }); n != 0 {
		t.Errorf("PublicKey: %v allocations, want 0", n)
	}
}
