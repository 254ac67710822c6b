package recovery

import (
	"encoding/binary"

	"github.com/icn/icn-agent/internal/wire"
)

// appendString appends s as a string of the wire encoding: a big-endian
// uint32 length, then s. The tests build plaintexts and migration files
// field by field with it, written out here rather than taken from
// internal/wire so that they check the encoding, not just agree with it.
func appendString(w, s []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(s)))
	return append(w, s...)
}

// reader takes an encoding apart field by field, with buf the bytes left,
// for tests that rebuild a file with one field changed.
type reader struct{ buf []byte }

func (r *reader) string(field string, max int) ([]byte, error) {
	w := wire.NewReader(r.buf)
	s := w.String(field, max)
	r.buf = r.buf[len(r.buf)-w.Len():]
	return s, w.Err()
}

func (r *reader) uint32(field string) (uint32, error) {
	w := wire.NewReader(r.buf)
	v := w.Uint32(field)
	r.buf = r.buf[len(r.buf)-w.Len():]
	return v, w.Err()
}
