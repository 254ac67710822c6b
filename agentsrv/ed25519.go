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
// for the duration of one call and are cleared before returning. What
// crypto/sha512 leaves in its own frames below ours (its block buffer holds
// the seed, a copy of its state the nonce prefix) is overwritten by
// scrubStack; see docs/security.md for what a scan of the agent's memory
// finds.

// edPublicKey writes the public key of seed to pub.
func edPublicKey(pub *[ed25519.PublicKeySize]byte, seed []byte) {
	scrubStack() // grow the stack now, not in the middle (see scrubStack)
	edPublicKeyFrame(pub, seed)
	scrubStack()
}

// edPublicKeyFrame is edPublicKey, in a frame of its own that the second
// scrubStack overwrites along with those of its callees.
//
//go:noinline
func edPublicKeyFrame(pub *[ed25519.PublicKeySize]byte, seed []byte) {
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
	scrubStack() // grow the stack now, not in the middle (see scrubStack)
	edSignFrame(sig, key, msg)
	scrubStack()
}

// edSignFrame is edSign, in a frame of its own that the second scrubStack
// overwrites: inlined crypto/sha512 code keeps copies of its state (the
// nonce prefix among them) in it.
//
//go:noinline
func edSignFrame(sig *[ed25519.SignatureSize]byte, key []byte, msg []byte) {
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

// scrubDepth is how much stack scrubStack overwrites: far more than the
// frames of crypto/sha512 and filippo.io/edwards25519 below edSign use.
// scrubDeepDepth is for the unseal path, whose call tree (sealstore,
// go-tpm's reflection-based unmarshalling, AES) runs deeper.
const (
	scrubDepth     = 16 << 10
	scrubDeepDepth = 64 << 10
)

// scrubStack zeroes scrubDepth bytes of the goroutine stack below its
// caller's frame, where the functions the caller called kept their
// locals: crypto/sha512's block buffer holding the seed, for one. Go
// does not clear a frame when it returns, and a goroutine's stack memory
// is reused, not wiped, when the goroutine ends.
//
// Called at the start of a function too, it makes the stack grow (if it
// must) before any secret is on it: growing copies the frames in use to
// a new stack and frees the old one as it is, secrets below the stack
// pointer included.
//
//go:noinline
func scrubStack() {
	var buf [scrubDepth]byte
	clear(buf[:])
	runtime.KeepAlive(&buf)
}

// scrubStackDeep is scrubStack over scrubDeepDepth bytes.
//
//go:noinline
func scrubStackDeep() {
	var buf [scrubDeepDepth]byte
	clear(buf[:])
	runtime.KeepAlive(&buf)
}
