package tpmseal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"
)

// cfbEncrypt is AES-CFB encryption as crypto/cipher does it, for lengths
// that end inside a block too, and leaves its feedback and key stream
// cleared.
func TestSessionCFBEncryptMatchesReference(t *testing.T) {
	s := newTestSession(t, false)
	for _, n := range []int{36, 68, 16, 1} {
		key, iv, plain := make([]byte, 16), make([]byte, 16), make([]byte, n)
		rand.Read(key)
		rand.Read(iv)
		rand.Read(plain)
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, n)
		cipher.NewCFBEncrypter(block, iv).XORKeyStream(want, plain)
		got := bytes.Clone(plain)
		if err := s.cfbEncrypt(got, key, iv); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: encrypted %x, want %x", n, got, want)
		}
		if rest := s.sec.Bytes()[offBlock : offBlock+32]; !bytes.Equal(rest, make([]byte, 32)) {
			t.Error("CFB feedback or key stream left in the session page")
		}
	}
}
