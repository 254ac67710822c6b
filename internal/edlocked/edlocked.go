// Package edlocked signs with Ed25519 keys that live in locked memory, and
// keeps the values derived from them off the Go heap and out of stack memory
// the runtime frees.
//
// crypto/ed25519 cannot sign with a private key that lives outside the Go
// heap: since Go 1.25 ed25519.Sign (and PrivateKey.Sign) look the key up in a
// cache keyed by a weak pointer to its first byte, and the runtime aborts the
// whole process ("fatal error: getWeakHandle on invalid pointer") when that
// pointer is into an mmap'ed secmem.Buffer. Copying the key to the heap for
// each signature would avoid the crash but leave a heap copy of the seed and
// of the derived scalar in that cache. So [Sign] and [PublicKey] implement
// RFC 8032 section 5.1.6 exactly as crypto/internal/fips140/ed25519 does,
// over filippo.io/edwards25519 (the upstream of the standard library's group
// code). The tests check them byte for byte against crypto/ed25519, whose
// signatures are deterministic, and against RFC 8032's vectors.
//
// # Where the derived values live
//
// The seed is read from the caller's (locked) buffer. The values derived
// from it, SHA-512 of the seed (the clamped scalar and the nonce prefix) and
// the nonce, live in stack frames for the duration of one call: Go gives no
// other place for crypto/sha512's state. Two runtime behaviours would leave
// them behind after the call returns, and the package closes both:
//
//   - A frame is not cleared when it returns. [Sign] and [PublicKey] call
//     [Scrub] after the work, which zeroes the stack below the caller's
//     frame, where the callees' frames were.
//   - The runtime moves a goroutine's stack to grow or shrink it, and frees
//     the old stack as it is, secrets included. Growth is made to happen
//     before any secret is on the stack: [Sign] and [PublicKey] call
//     [Scrub] first, which needs more stack than the work does. Shrinking
//     happens at a garbage collection, and only to a goroutine that uses
//     less than a quarter of its stack; [Deep] runs a function with a frame
//     of PadSize bytes above it, so a goroutine inside Deep always uses
//     more than that quarter (its stack never exceeds 4*PadSize here).
//
// So every goroutine that handles secrets runs its secret work inside
// [Deep]: the agent's connection goroutines and its unseal goroutines do.
// The registers the kernel saves on a signal stack when a signal interrupts
// the work are outside the reach of Go code; see docs/security.md.
package edlocked

import (
	"crypto/ed25519"
	"crypto/sha512"
	"runtime"

	"filippo.io/edwards25519"
)

// PublicKey writes the public key of seed (32 bytes) to pub.
func PublicKey(pub *[ed25519.PublicKeySize]byte, seed []byte) {
	Scrub() // grow the stack now, not in the middle
	publicKeyFrame(pub, seed)
	Scrub()
}

// publicKeyFrame is PublicKey, in a frame of its own that the second Scrub
// overwrites along with those of its callees.
//
//go:noinline
func publicKeyFrame(pub *[ed25519.PublicKeySize]byte, seed []byte) {
	h := sha512.Sum512(seed[:ed25519.SeedSize])
	var s edwards25519.Scalar
	if _, err := s.SetBytesWithClamping(h[:32]); err != nil {
		panic("edlocked: internal error: scalar from clamped bytes: " + err.Error())
	}
	var a edwards25519.Point
	a.ScalarBaseMult(&s)
	copy(pub[:], a.Bytes())
	clear(h[:])
	s = edwards25519.Scalar{}
	runtime.KeepAlive(&h)
	runtime.KeepAlive(&s)
}

// Sign writes to sig the Ed25519 signature of msg by key, 64 bytes laid out
// as an ed25519.PrivateKey (seed || public key). The public key half must be
// the one derived from the seed: the caller checks that when it fills key.
// Sign does not allocate.
func Sign(sig *[ed25519.SignatureSize]byte, key []byte, msg []byte) {
	Scrub() // grow the stack now, not in the middle
	signFrame(sig, key, msg)
	Scrub()
}

// signFrame is Sign, in a frame of its own that the second Scrub
// overwrites: inlined crypto/sha512 code keeps copies of its state (the
// nonce prefix among them) in it.
//
//go:noinline
func signFrame(sig *[ed25519.SignatureSize]byte, key []byte, msg []byte) {
	h := sha512.Sum512(key[:ed25519.SeedSize])
	var s edwards25519.Scalar
	if _, err := s.SetBytesWithClamping(h[:32]); err != nil {
		panic("edlocked: internal error: scalar from clamped bytes: " + err.Error())
	}

	// r = SHA-512(prefix || msg) mod l, R = rB.
	var digest [sha512.Size]byte
	d := sha512.New()
	d.Write(h[32:])
	d.Write(msg)
	d.Sum(digest[:0])
	var r edwards25519.Scalar
	if _, err := r.SetUniformBytes(digest[:]); err != nil {
		panic("edlocked: internal error: scalar from digest: " + err.Error())
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
		panic("edlocked: internal error: scalar from digest: " + err.Error())
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

// ScrubSize is how much stack [Scrub] overwrites: far more than the frames
// of crypto/sha512, filippo.io/edwards25519, AES and Argon2's BLAKE2b below
// their callers use.
const ScrubSize = 16 << 10

// PadSize is the frame [Deep] keeps above the function it runs. A
// goroutine's stack is shrunk only when it uses less than a quarter of it,
// so inside Deep the stack is never shrunk while it is at most 4*PadSize
// (256 KiB), far more than any secret-handling path here needs.
const PadSize = 64 << 10

// Scrub zeroes ScrubSize bytes of the goroutine stack below its caller's
// frame, where the functions the caller called kept their locals:
// crypto/sha512's block buffer holding the seed, for one. Go does not
// clear a frame when it returns, and a goroutine's stack memory is reused,
// not wiped, when the goroutine ends.
//
// Called before secret work, it makes the stack grow (if it must) while no
// secret is on it: growing copies the frames in use to a new stack and
// frees the old one as it is, secrets below the stack pointer included.
//
//go:noinline
func Scrub() {
	var buf [ScrubSize]byte
	clear(buf[:])
	runtime.KeepAlive(&buf)
}

// Deep runs f with a PadSize frame above it, so that the garbage collector
// never shrinks (copies, then frees as it is) the goroutine's stack while f
// runs; see the package documentation. Run a goroutine's secret work, or
// the whole goroutine, inside Deep, and have the work itself [Scrub] before
// and after.
//
//go:noinline
func Deep(f func()) {
	var pad [PadSize]byte
	runtime.KeepAlive(&pad)
	Scrub() // grow now, before f puts anything on the stack
	f()
	Scrub()
}
