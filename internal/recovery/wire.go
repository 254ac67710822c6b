package recovery

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The binary encoding shared by backup plaintexts and migration files:
// big-endian integers, and strings as a uint32 length and that many bytes.

// ErrMalformed is wrapped by every error about a backup plaintext, SRK file
// or migration file that is not well-formed.
var ErrMalformed = errors.New("recovery: malformed file")

// ErrUnsupportedVersion is wrapped by errors about a file of a format
// version this icn-agent does not read, typically written by a newer one.
var ErrUnsupportedVersion = errors.New("recovery: unsupported format version")

func malformed(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
}

func appendString(w, s []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(s)))
	return append(w, s...)
}

// reader decodes the binary encoding; every method names the field it
// reads in its errors, and no length is trusted before it is checked
// against the bytes left.
type reader struct {
	buf []byte
}

func (r *reader) next(field string, n int) ([]byte, error) {
	if n < 0 || len(r.buf) < n {
		return nil, malformed(field, "truncated: want %d bytes, %d left", n, len(r.buf))
	}
	b := r.buf[:n:n]
	r.buf = r.buf[n:]
	return b, nil
}

func (r *reader) uint32(field string) (uint32, error) {
	b, err := r.next(field, 4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (r *reader) int64(field string) (int64, error) {
	b, err := r.next(field, 8)
	if err != nil {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// string reads a string of at most max bytes. The result aliases the input.
func (r *reader) string(field string, max int) ([]byte, error) {
	n, err := r.uint32(field + " length")
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(max) {
		return nil, malformed(field, "length %d exceeds the maximum of %d", n, max)
	}
	return r.next(field, int(n))
}

func (r *reader) end() error {
	if len(r.buf) != 0 {
		return malformed("end", "%d trailing bytes", len(r.buf))
	}
	return nil
}

// maxComment bounds a comment, as in a sealed blob.
const maxComment = 1024

// checkComment applies the sealed blob's rules to a comment: at most 1024
// bytes of UTF-8 without control characters.
func checkComment(c string) error {
	if len(c) > maxComment {
		return malformed("comment", "%d bytes, max %d", len(c), maxComment)
	}
	if !utf8.ValidString(c) {
		return malformed("comment", "not valid UTF-8")
	}
	for i, r := range c {
		if unicode.IsControl(r) {
			return malformed("comment", "control character %U at byte %d", r, i)
		}
	}
	return nil
}

// decodeOnePEM returns the single PEM block of type typ that data must
// consist of, with nothing but whitespace around it.
func decodeOnePEM(data []byte, typ string) (*pem.Block, error) {
	trimmed := bytes.TrimSpace(data)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, malformed("pem", "not a PEM file (want -----BEGIN %s-----)", typ)
	}
	if bytes.Count(trimmed, []byte("-----BEGIN ")) != 1 {
		return nil, malformed("pem", "want exactly one PEM block")
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, malformed("pem", "no valid PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, malformed("pem", "data after the PEM block")
	}
	if block.Type != typ {
		return nil, malformed("pem", "type %q, want %q", truncate(block.Type, 64), typ)
	}
	return block, nil
}
