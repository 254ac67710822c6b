package sealstore

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"testing"

	"github.com/icn/icn-agent/internal/wire/wiretest"
)

// appendString appends s as a string of the wire encoding: a big-endian
// uint32 length, then s. The tests build blobs and signed policies field
// by field with it, written out here rather than taken from internal/wire
// so that they check the encoding, not just agree with it.
func appendString(w, s []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(s)))
	return append(w, s...)
}

// TestSeedsRoundTrip: the binary content of every committed seed that
// parses is written back byte for byte (the PEM armour around it may differ
// in whitespace), so the files of earlier icn-agents keep their encoding.
func TestSeedsRoundTrip(t *testing.T) {
	parsers := map[string]func([]byte) ([]byte, error){
		"FuzzParseBlob": func(data []byte) ([]byte, error) {
			b, err := ParseBlob(data)
			if err != nil {
				return nil, err
			}
			return b.Marshal()
		},
		"FuzzParseSignedPolicy": func(data []byte) ([]byte, error) {
			p, err := ParseSignedPolicy(data)
			if err != nil {
				return nil, err
			}
			return p.Marshal()
		},
	}
	// The PEM armour around the binary content may differ in whitespace.
	wiretest.RoundTrip(t, parsers, func(in, out []byte) bool {
		block, _ := pem.Decode(bytes.TrimSpace(in))
		again, _ := pem.Decode(out)
		return block != nil && again != nil && bytes.Equal(block.Bytes, again.Bytes)
	})
}
