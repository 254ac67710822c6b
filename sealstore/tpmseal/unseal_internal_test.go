package tpmseal

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/internal/secmem"
)

// newTestSession is an unsealSession with random keys and nonces and no
// TPM, for the cryptography alone.
func newTestSession(t *testing.T, pin bool) *unsealSession {
	t.Helper()
	sec, err := secmem.New(sessionPage)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sec.Destroy)
	s := &unsealSession{sec: sec, hmacKeyLen: sha256.Size, nonceTPM: make([]byte, sessionNonceSize), flushed: true}
	if pin {
		s.hmacKeyLen += sha256.Size
	}
	rand.Read(s.key())
	rand.Read(s.nonceCaller[:])
	rand.Read(s.nonceTPM)
	return s
}

// The hand-made HMAC-SHA256 and KDFa agree with crypto/hmac and go-tpm's
// KDFa, for session keys with and without an authValue.
func TestSessionCryptoMatchesReference(t *testing.T) {
	for _, pin := range []bool{false, true} {
		s := newTestSession(t, pin)
		msg := [][]byte{make([]byte, 32), s.nonceCaller[:], s.nonceTPM, {attrEncrypt}}
		rand.Read(msg[0])
		var got [32]byte
		if err := s.hmac(got[:], msg...); err != nil {
			t.Fatal(err)
		}
		ref := hmac.New(sha256.New, s.key())
		for _, m := range msg {
			ref.Write(m)
		}
		if want := ref.Sum(nil); !bytes.Equal(got[:], want) {
			t.Errorf("pin=%v: HMAC %x, want %x", pin, got, want)
		}
		out := make([]byte, 32)
		s.kdfa(out, s.key(), "CFB", s.nonceTPM, s.nonceCaller[:])
		if want := tpm2.KDFa(crypto.SHA256, s.key(), "CFB", s.nonceTPM, s.nonceCaller[:], 256); !bytes.Equal(out, want) {
			t.Errorf("pin=%v: KDFa %x, want %x", pin, out, want)
		}
		// The scratch areas are clear afterwards: only the keys remain.
		if rest := s.sec.Bytes()[offCFB:]; !bytes.Equal(rest, make([]byte, len(rest))) {
			t.Errorf("pin=%v: the session page holds leftovers past the keys", pin)
		}
	}
}

// cfbDecrypt is AES-CFB as crypto/cipher does it, and leaves its feedback
// and key stream cleared.
func TestSessionCFBMatchesReference(t *testing.T) {
	s := newTestSession(t, false)
	key, iv, plain := make([]byte, 16), make([]byte, 16), make([]byte, 32)
	rand.Read(key)
	rand.Read(iv)
	rand.Read(plain)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, len(plain))
	cipher.NewCFBEncrypter(block, iv).XORKeyStream(ct, plain)
	if err := s.cfbDecrypt(ct, key, iv); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ct, plain) {
		t.Fatalf("decrypted %x, want %x", ct, plain)
	}
	if rest := s.sec.Bytes()[offBlock : offBlock+32]; !bytes.Equal(rest, make([]byte, 32)) {
		t.Error("CFB feedback or key stream left in the session page")
	}
}

// wipeBlock recognises crypto/aes's cipher and zeroes its key schedule.
// If a Go release changes the type so that it no longer can, this fails
// rather than the schedule silently staying behind.
func TestWipeBlock(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 16)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	var before [16]byte
	block.Encrypt(before[:], make([]byte, 16))
	if !wipeBlock(block) {
		t.Fatalf("wipeBlock does not know %T", block)
	}
	var after [16]byte
	block.Encrypt(after[:], make([]byte, 16))
	if before == after {
		t.Fatal("the block still encrypts with the key after wipeBlock")
	}
	if wipeBlock(nil) {
		t.Error("wipeBlock(nil) claimed to wipe")
	}
}

// The session's secret work makes no heap allocation that could hold a
// secret: HMAC and KDFa allocate nothing.
func TestSessionCryptoAllocations(t *testing.T) {
	s := newTestSession(t, true)
	var out [32]byte
	msg := make([]byte, 32)
	if n := testing.AllocsPerRun(20, func() { s.hmac(out[:], msg, s.nonceCaller[:]) }); n != 0 {
		t.Errorf("hmac allocates %v times per call", n)
	}
}
