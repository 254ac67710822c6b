package attest

import (
	"crypto/sha256"
	"encoding/binary"
)

// appendString appends s as an SSH string: a big-endian uint32 length,
// then s. The tests build damaged encodings with it, written out here
// rather than taken from internal/wire so that they check the encoding,
// not just agree with it.
func appendString(w, s []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(s)))
	return append(w, s...)
}

// objectName returns the TPM Name of an object whose nameAlg is SHA-256,
// from its marshalled TPMT_PUBLIC: TPM_ALG_SHA256 || SHA-256(TPMT_PUBLIC)
// (TPM 2.0 Part 1, 16 "Names"). The tests compute Names by this formula, so
// that they check the one go-tpm computes for Verify.
func objectName(rawPublic []byte) []byte {
	d := sha256.Sum256(rawPublic)
	return append([]byte{0x00, 0x0b}, d[:]...)
}
