package sealstore

import "encoding/binary"

// appendString appends s as a string of the wire encoding: a big-endian
// uint32 length, then s. The tests build blobs and signed policies field
// by field with it, written out here rather than taken from internal/wire
// so that they check the encoding, not just agree with it.
func appendString(w, s []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(s)))
	return append(w, s...)
}
