package seccrypt

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// HMAC, KDFa, KDFe and CFB give what crypto/hmac, go-tpm's KDFs and
// crypto/cipher give.
func TestAgainstLibraries(t *testing.T) {
	scratch, inner := make([]byte, 1024), make([]byte, sha256.Size)
	key := bytes.Repeat([]byte{0x5a}, 32)
	u, v := []byte("context u"), []byte("context v")

	var got [sha256.Size]byte
	if err := HMAC(got[:], key, scratch, inner, u, v); err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(u)
	m.Write(v)
	if want := m.Sum(nil); !bytes.Equal(got[:], want) {
		t.Errorf("HMAC = %x, want %x", got, want)
	}

	for _, n := range []int{16, 32} {
		out := make([]byte, n)
		if err := KDFa(out, key, "STORAGE", u, v, scratch, inner); err != nil {
			t.Fatal(err)
		}
		if want := tpm2.KDFa(crypto.SHA256, key, "STORAGE", u, v, 8*n); !bytes.Equal(out, want) {
			t.Errorf("KDFa(%d bits) = %x, want %x", 8*n, out, want)
		}
	}

	if err := KDFe(&got, key, "DUPLICATE", u, v, scratch); err != nil {
		t.Fatal(err)
	}
	if want := tpm2.KDFe(crypto.SHA256, key, "DUPLICATE", u, v, 256); !bytes.Equal(got[:], want) {
		t.Errorf("KDFe = %x, want %x", got, want)
	}

	iv := bytes.Repeat([]byte{7}, aes.BlockSize)
	for _, n := range []int{1, 16, 17, 170} {
		plain := bytes.Repeat([]byte{byte(n)}, n)
		data := bytes.Clone(plain)
		if err := CFB(data, key[:16], iv, scratch[:32], true); err != nil {
			t.Fatal(err)
		}
		block, _ := aes.NewCipher(key[:16])
		want := make([]byte, n)
		cipher.NewCFBEncrypter(block, iv).XORKeyStream(want, plain)
		if !bytes.Equal(data, want) {
			t.Errorf("CFB encrypt of %d bytes = %x, want %x", n, data, want)
		}
		if err := CFB(data, key[:16], iv, scratch[:32], false); err != nil || !bytes.Equal(data, plain) {
			t.Errorf("CFB decrypt of %d bytes does not give the plaintext back (%v)", n, err)
		}
	}
	if !bytes.Equal(scratch, make([]byte, len(scratch))) || !bytes.Equal(inner, make([]byte, len(inner))) {
		t.Error("scratch space left uncleared")
	}
}
