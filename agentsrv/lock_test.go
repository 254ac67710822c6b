package agentsrv

import (
	"bytes"
	"encoding/binary"
	"hash"
	"reflect"
	"testing"
	"unsafe"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/blake2b"
)

// blake2bBlockBuffer returns a copy of the block buffer of an x/crypto
// BLAKE2b digest: the bytes it keeps (in the heap, never wiped) until a
// block is complete. It fails the test if the digest no longer has one,
// so that a change in x/crypto makes this test, and the reasoning at
// passHead, be revisited.
func blake2bBlockBuffer(t *testing.T, h hash.Hash) []byte {
	t.Helper()
	v := reflect.ValueOf(h)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		t.Fatalf("blake2b digest is a %T, not a pointer to a struct", h)
	}
	f := v.Elem().FieldByName("block")
	if !f.IsValid() || f.Kind() != reflect.Array || f.Len() != blake2b.BlockSize || f.Type().Elem().Kind() != reflect.Uint8 {
		t.Fatalf("blake2b digest %T has no [%d]byte block buffer: revisit passHead", h, blake2b.BlockSize)
	}
	return bytes.Clone((*[blake2b.BlockSize]byte)(unsafe.Pointer(f.UnsafeAddr()))[:])
}

// writeH0 feeds h what argon2's initHash does, up to and including P (and
// the salt's length and salt when salt is not nil), checking the block
// buffer after each write.
func writeH0(t *testing.T, h hash.Hash, p, salt []byte, check func(stage string, block []byte)) {
	var params [24]byte
	binary.LittleEndian.PutUint32(params[0:], lockThreads)
	binary.LittleEndian.PutUint32(params[4:], lockKeyLen)
	binary.LittleEndian.PutUint32(params[8:], lockMemory)
	binary.LittleEndian.PutUint32(params[12:], lockTime)
	binary.LittleEndian.PutUint32(params[16:], argon2.Version)
	binary.LittleEndian.PutUint32(params[20:], 2) // argon2id
	h.Write(params[:])
	h.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(p))))
	if len(params)+4 != h0Prefix {
		t.Fatalf("H0 prefix is %d bytes, passHead assumes %d", len(params)+4, h0Prefix)
	}
	h.Write(p)
	check("after P", blake2bBlockBuffer(t, h))
	h.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(salt))))
	h.Write(salt)
	check("after the salt", blake2bBlockBuffer(t, h))
}

// TestLockInputLayout pins the property the lock passphrase's layout
// exists for: hashing it the way argon2.IDKey does (RFC 9106's H0, with
// x/crypto's BLAKE2b) never copies a passphrase byte into BLAKE2b's block
// buffer; yet every byte of the layout is hashed, and hashPassphrase is
// plain Argon2id over it.
func TestLockInputLayout(t *testing.T) {
	salt := bytes.Repeat([]byte{0x5a}, lockSaltLen)
	for _, n := range []int{1, 7, 95, 96, 97, 123, 124, 125, 128, 200, 251, 252, 253, 256, 1000, 4096} {
		pass := bytes.Repeat([]byte{0xa7}, n) // a byte the layout never uses elsewhere
		buf, err := passInput(pass)
		if err != nil {
			t.Fatal(err)
		}
		p := bytes.Clone(buf.Bytes())
		buf.Destroy()

		// The passphrase region starts where H0's stream reaches a block
		// boundary and spans whole blocks, with fixed bytes after it.
		region := len(p) - passHead - passTail
		if (h0Prefix+passHead)%blake2b.BlockSize != 0 || region%blake2b.BlockSize != 0 || region < 4+n || passTail < 1 {
			t.Fatalf("%d-byte passphrase: head %d, region %d, tail %d: region not block-aligned", n, passHead, region, passTail)
		}
		if !bytes.Equal(p[passHead+4:passHead+4+n], pass) {
			t.Fatalf("%d-byte passphrase: not in its region", n)
		}

		h, _ := blake2b.New512(nil)
		writeH0(t, h, p, salt, func(stage string, block []byte) {
			if bytes.Contains(block, []byte{0xa7}) {
				t.Errorf("%d-byte passphrase: BLAKE2b's block buffer holds passphrase bytes %s: %x", n, stage, block)
			}
		})

		// The control: the passphrase given as it is lands in the buffer.
		h, _ = blake2b.New512(nil)
		leaked := false
		writeH0(t, h, pass, salt, func(_ string, block []byte) {
			leaked = leaked || bytes.Contains(block, []byte{0xa7})
		})
		if !leaked {
			t.Errorf("control, %d-byte passphrase: a plain passphrase did not reach the block buffer; the test proves nothing", n)
		}

		if n > 300 {
			continue // the Argon2 runs below cost 30 ms each
		}
		got, err := hashPassphrase(pass, salt)
		if err != nil {
			t.Fatal(err)
		}
		want := argon2.IDKey(p, salt, lockTime, lockMemory, lockThreads, lockKeyLen)
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%d-byte passphrase: hashPassphrase is not Argon2id of the layout", n)
		}
		got.Destroy()
		// Every part of the layout is hashed: head, padding and tail.
		for _, i := range []int{0, passHead - 1, passHead + 4 + n, len(p) - 1} {
			if i == passHead+4+n && i >= len(p)-passTail {
				continue // no padding
			}
			q := bytes.Clone(p)
			q[i] ^= 1
			if bytes.Equal(argon2.IDKey(q, salt, lockTime, lockMemory, lockThreads, lockKeyLen), want) {
				t.Errorf("%d-byte passphrase: byte %d of the layout is not hashed", n, i)
			}
		}
	}
}
