package agentsrv

import (
	"crypto/ed25519"
	"crypto/sha512"
	"runtime"

	"filippo.io/edwards25519"
)

// Ed25519 signing over locked memory.
//
// crypto/ed25519 cannot sign with a private key that lives outside the Go
// heap: since Go 1.25 ed25519.Sign (and PrivateKey.Sign) look the key up in a
// cache keyed by a weak pointer to its first byte, and the runtime aborts the
// whole process ("fatal error: getWeakHandle on invalid pointer") when that
// pointer is into an mmap'ed secmem.Buffer. Copying the key to the heap for
// each signature would avoid the crash but leave a heap copy of the seed and
// of the derived scalar in that cache. So the agent signs with the two
// functions below, which implement RFC 8032 section 5.1.6 exactly as
// crypto/internal/fips140/ed25519 does, over filippo.io/edwards25519 (the
// upstream of the standard library's group code). The tests check them
// byte for byte against crypto/ed25519, whose signatures are deterministic.
//
// The seed is read from the locked buffer; the values derived from it (the
// SHA-512 of the seed, the scalar and the nonce) live on the goroutine stack
// for the duration of one call and are cleared before returning, as far as
// Go allows.

// edPublicKey writes the public key of seed to pub.
func edPublicKey(pub *[ed25519.PublicKeySize]byte, seed []byte) {
	h := sha512.Sum512(seed[:ed25519.SeedSize])
	var s edwards25519.Scalar
	if _, err := s.SetBytesWithClamping(h[:32]); err != nil {
		panic("agentsrv: internal error: scalar from clamped bytes: " + err.Error())
	}
	var a edwards25519.Point
	a.ScalarBaseMult(&s)
	copy(pub[:], a.Bytes())
	clear(h[:])
	s = edwards25519.Scalar{}
	runtime.KeepAlive(&h)
	runtime.KeepAlive(&s)
}

// edSign writes to sig the Ed25519 signature of msg by key, 64 bytes laid out
// as an ed25519.PrivateKey (seed || public key). The public key half must be
// the one derived from the seed; the caller checks that when it fills key.
func edSign(sig *[ed25519.SignatureSize]byte, key []byte, msg []byte) {
	h := sha512.Sum512(key[:ed25519.SeedSize])
	var s edwards25519.Scalar
	if _, err := s.SetBytesWithClamping(h[:32]); err != nil {
		panic("agentsrv: internal error: scalar from clamped bytes: " + err.Error())
	}

	// r = SHA-512(prefix || msg) mod l, R = rB.
	var digest [sha512.Size]byte
	d := sha512.New()
	d.Write(h[32:])
	d.Write(msg)
	d.Sum(digest[:0])
	var r edwards25519.Scalar
	if _, err := r.SetUniformBytes(digest[:]); err != nil {
		panic("agentsrv: internal error: scalar from digest: " + err.Error())
	}
	var R edwards25519.Point
	R.ScalarBaseMult(&r)
	copy(sig[:32], R.Bytes())

	// k = SHA-512(R || A || msg) mod l, S = k*s + r.
	d.Reset()
	d.Write(sig[:32])
	d.Write(key[ed25519.SeedSize:])
	d.Write(msg)
	d.Sum(digest[:0])
	var k edwards25519.Scalar
	if _, err := k.SetUniformBytes(digest[:]); err != nil {
		panic("agentsrv: internal error: scalar from digest: " + err.Error())
	}
	var S edwards25519.Scalar
	S.MultiplyAdd(&k, &s, &r)
	copy(sig[32:], S.Bytes())

	clear(h[:])
	clear(digest[:])
	s = edwards25519.Scalar{}
	r = edwards25519.Scalar{}
	d.Reset()
	runtime.KeepAlive(&h)
	runtime.KeepAlive(&s)
	runtime.KeepAlive(&r)
	runtime.KeepAlive(&digest)
}
