// Package seccrypt computes the TPM's symmetric primitives, HMAC-SHA256,
// KDFa, KDFe and AES-CFB, over buffers in locked memory (secmem), without
// leaving their keys or intermediate values in Go heap memory.
//
// crypto/hmac copies its key's pads into heap memory it never clears, a
// hash.Hash keeps its last input block on the heap, a cipher.Stream from
// crypto/cipher keeps the last ciphertext block and its key stream (which
// XOR to the last plaintext block), and crypto/aes keeps the expanded key
// schedule in a heap object. So the functions here lay their inputs out in
// caller-provided locked scratch space and hash them with sha256.Sum256,
// whose state stays on the stack (callers run them inside edlocked.Deep,
// which scrubs it), keep the CFB feedback and key stream in locked memory,
// and zero the AES key schedule after use (WipeBlock).
package seccrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"reflect"
	"runtime"
	"unsafe"
)

// HMAC writes HMAC-SHA256(key, msg...) to out (RFC 2104), with key at most
// one block, using scratch for the pads and message and inner for the
// inner digest (both locked memory), which it clears.
func HMAC(out, key, scratch, inner []byte, msg ...[]byte) error {
	n := 0
	for _, m := range msg {
		n += len(m)
	}
	if len(key) > sha256.BlockSize || n > len(scratch)-sha256.BlockSize {
		return fmt.Errorf("internal error: HMAC of %d bytes with a %d-byte key", n, len(key))
	}
	defer clear(scratch[:sha256.BlockSize+max(n, sha256.Size)])
	defer clear(inner)
	pad := scratch[:sha256.BlockSize]
	clear(pad)
	copy(pad, key)
	for i := range pad {
		pad[i] ^= 0x36
	}
	off := sha256.BlockSize
	for _, m := range msg {
		off += copy(scratch[off:], m)
	}
	sum := sha256.Sum256(scratch[:off])
	copy(inner, sum[:])
	clear(pad)
	copy(pad, key)
	for i := range pad {
		pad[i] ^= 0x5c
	}
	copy(scratch[sha256.BlockSize:], inner)
	sum = sha256.Sum256(scratch[:sha256.BlockSize+sha256.Size])
	copy(out, sum[:])
	clear(sum[:])
	runtime.KeepAlive(&sum)
	return nil
}

// KDFa writes KDFa(SHA-256, key, label, contextU, contextV, 8*len(out)) to
// out (TPM 2.0 Part 1, 11.4.10.2), for len(out) of at most one digest: one
// HMAC over counter 1 || label || 0 || contextU || contextV || bits, with
// scratch and inner as for HMAC.
func KDFa(out, key []byte, label string, contextU, contextV, scratch, inner []byte) error {
	if len(out) > sha256.Size {
		return fmt.Errorf("internal error: KDFa of %d bytes", len(out))
	}
	var counter, bits [4]byte
	binary.BigEndian.PutUint32(counter[:], 1)
	binary.BigEndian.PutUint32(bits[:], uint32(8*len(out)))
	var full [sha256.Size]byte
	err := HMAC(full[:], key, scratch, inner, counter[:], []byte(label), []byte{0}, contextU, contextV, bits[:])
	copy(out, full[:])
	clear(full[:])
	runtime.KeepAlive(&full)
	return err
}

// KDFe writes KDFe(SHA-256, z, use, partyUInfo, partyVInfo, 256) to out
// (TPM 2.0 Part 1, 11.4.10.3), one digest: SHA-256 of counter 1 || z ||
// use || 0 || partyUInfo || partyVInfo, laid out in scratch (locked
// memory), which it clears.
func KDFe(out *[sha256.Size]byte, z []byte, use string, partyUInfo, partyVInfo, scratch []byte) error {
	n := 4 + len(z) + len(use) + 1 + len(partyUInfo) + len(partyVInfo)
	if n > len(scratch) {
		return fmt.Errorf("internal error: KDFe over %d bytes", n)
	}
	in := scratch[:n]
	defer clear(in)
	binary.BigEndian.PutUint32(in, 1)
	off := 4
	off += copy(in[off:], z)
	off += copy(in[off:], use)
	in[off] = 0
	off++
	off += copy(in[off:], partyUInfo)
	copy(in[off:], partyVInfo)
	sum := sha256.Sum256(in)
	copy(out[:], sum[:])
	clear(sum[:])
	runtime.KeepAlive(&sum)
	return nil
}

// CFB runs AES-CFB (full-block feedback) over data in place, encrypting or
// decrypting, with its feedback and key stream in work (2 blocks of locked
// memory), which it clears, and wipes the key schedule.
func CFB(data, key, iv, work []byte, encrypt bool) error {
	if len(work) < 2*aes.BlockSize || len(iv) != aes.BlockSize {
		return fmt.Errorf("internal error: CFB with a %d-byte IV and %d bytes of work space", len(iv), len(work))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("aes-cfb: %w", err)
	}
	defer WipeBlock(block)
	fb := work[:aes.BlockSize]                  // feedback: IV, then ciphertext
	ks := work[aes.BlockSize : 2*aes.BlockSize] // key stream
	copy(fb, iv)
	for len(data) > 0 {
		block.Encrypt(ks, fb)
		n := min(len(data), aes.BlockSize)
		if !encrypt {
			copy(fb, data[:n]) // the next feedback is this ciphertext block
		}
		for i := range n {
			data[i] ^= ks[i]
		}
		if encrypt {
			copy(fb, data[:n])
		}
		data = data[n:]
	}
	clear(fb)
	clear(ks)
	return nil
}

// WipeBlock zeroes the memory of an AES cipher.Block: crypto/aes keeps the
// expanded key schedule in a heap object it never clears, and the schedule
// gives the key back. The object is a pointer to a struct of integers
// (crypto/internal/fips140/aes.Block); WipeBlock checks that through
// reflection and zeroes exactly that struct, and does nothing for any other
// shape (which the tests report after a Go upgrade).
func WipeBlock(b cipher.Block) bool {
	v := reflect.ValueOf(b)
	if v.Kind() != reflect.Pointer || v.IsNil() || !pointerFree(v.Type().Elem()) {
		return false
	}
	clear(unsafe.Slice((*byte)(v.UnsafePointer()), v.Type().Elem().Size()))
	return true
}

// pointerFree reports whether values of t hold no pointers, so that
// overwriting them with zeroes cannot confuse the garbage collector.
func pointerFree(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return pointerFree(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !pointerFree(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
