package attest

import "encoding/binary"

// appendString appends s as an SSH string: a big-endian uint32 length,
// then s. The tests build damaged encodings with it, written out here
// rather than taken from internal/wire so that they check the encoding,
// not just agree with it.
func appendString(w, s []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(s)))
	return append(w, s...)
}
