// Package wire reads and writes the binary encoding every icn-agent format
// is made of: sealed identity blobs and signed policies (sealstore),
// attestation evidence (attest), backup plaintexts and migration files
// (internal/recovery). Each of those packages documents its own layout;
// this one is the framing they share, written once.
//
// # Encoding
//
// A format is a fixed sequence of fields, with no tags, padding or
// alignment:
//
//	byte      one byte
//	uint16    two bytes, big-endian
//	uint32    four bytes, big-endian
//	uint64    eight bytes, big-endian (a time is seconds since the Unix epoch)
//	string    a uint32 length, then that many bytes (an RFC 4251 "string")
//
// Every format opens with a [Preamble]:
//
//	string    magic      names the format: "icn-agent-sealed-identity", ...
//	uint32    version    of that format
//
// A reader checks the magic, then the version, before anything else, so
// that a file of a newer version is reported as such ([VersionError])
// rather than as damaged, and a file of another kind as not being this one
// ([MagicError]). Nothing follows the last field: trailing bytes are an
// error, so each value has exactly one encoding and a parser can promise
// that what it accepts re-encodes to the same bytes.
//
// # Writing
//
// A format writes itself into a [cryptobyte.Builder]: [Preamble.Add] for
// the preamble, [AddString] for strings, and the Builder's own AddUint8,
// AddUint16, AddUint32 and AddUint64 for integers. A Builder made with
// cryptobyte.NewFixedBuilder over locked memory never reallocates, so a
// secret written into it leaves no copy on the heap.
//
//	var b cryptobyte.Builder
//	blobPreamble.Add(&b)
//	wire.AddString(&b, []byte(name))
//	b.AddUint64(uint64(created.Unix()))
//	out, err := b.Bytes()
//
// # Reading
//
// A [Reader] reads the fields in the order they were written. Every read
// names its field, and its errors say which field was bad and why:
// "comment: length 4096 exceeds the maximum of 1024", "created: truncated:
// want 8 bytes, 3 left". The first error sticks: the reads after it do
// nothing and return zero values, and [Reader.Err] reports it. A parser
// therefore reads a run of fields and checks Err once, and must check it
// before it uses a value it read to decide what comes next (a count of
// entries, a kind that changes the layout) or to check anything else:
//
//	r := wire.NewReader(data)
//	r.Preamble(blobPreamble)
//	name := r.String("name", maxName)
//	count := r.Uint32("pcr count")
//	if err := r.Err(); err != nil {
//		return fmt.Errorf("%w: %w", ErrMalformed, err) // see below
//	}
//	if count > maxPCRs { ... }
//	...
//	r.End()
//	if err := r.Err(); ...
//
// A string's length is checked against the field's bound and against the
// bytes left before the string is read, so a hostile length never makes
// anyone allocate. Strings are returned as slices of the input, not copies
// (cryptobyte reads without copying): a parser copies what it keeps, and
// copies a secret straight into locked memory, leaving no copy of it on
// the heap.
//
// # Errors
//
// The errors of a Reader wrap no sentinel of their own: the ones about the
// preamble are a *MagicError or a *VersionError, the others name a field.
// Each format maps them, in one function, to its package's sentinels
// (sealstore.ErrMalformedBlob, recovery.ErrMalformed, ...): a *VersionError
// to its unsupported-version sentinel, the rest to its malformed one,
// wrapped once, so that errors.Is works at that package's API and a message
// reads "sealstore: malformed blob: name: length 65 exceeds the maximum of
// 64". The package example shows a whole format.
package wire

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// maxMagic bounds the magic string of a preamble.
const maxMagic = 64

// Preamble is the magic and version that open a format.
type Preamble struct {
	// Magic names the format, "icn-agent-" and a word or two. It is at
	// most 64 bytes.
	Magic string
	// Version is the format version.
	Version uint32
}

// Add writes p: the magic as a string, then the version as a uint32.
func (p Preamble) Add(b *cryptobyte.Builder) {
	AddString(b, []byte(p.Magic))
	b.AddUint32(p.Version)
}

// Opens reports whether data opens with p's magic, whatever the version
// after it.
func (p Preamble) Opens(data []byte) bool {
	r := NewReader(data)
	return string(r.String("magic", maxMagic)) == p.Magic && r.Err() == nil
}

// AddString writes s as a string: its length as a uint32, then its bytes.
// A string of 4 GiB or more makes the Builder fail.
func AddString(b *cryptobyte.Builder, s []byte) {
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s) })
}

// MagicError reports input that does not open with the magic of any format
// the Reader was asked for: not a file of that kind at all.
type MagicError struct {
	// Magic is what the input holds where the magic should be, at most 64
	// bytes.
	Magic string
	// Want are the magics the Reader was asked for.
	Want []string
}

func (e *MagicError) Error() string {
	want := make([]string, len(e.Want))
	for i, m := range e.Want {
		want[i] = strconv.Quote(m)
	}
	return fmt.Sprintf("magic: %q, want %s", e.Magic, strings.Join(want, " or "))
}

// VersionError reports input of a known format but of a version the Reader
// was not asked for, typically written by a newer icn-agent.
type VersionError struct {
	// Magic is the format's magic.
	Magic string
	// Version is the version the input holds.
	Version uint32
	// Want is the version the Reader reads under that magic.
	Want uint32
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("%s version %d (this icn-agent reads version %d)", e.Magic, e.Version, e.Want)
}

// Reader reads the fields of a format from a byte string. See the package
// documentation for how its errors work.
type Reader struct {
	s   cryptobyte.String
	err error
}

// NewReader returns a Reader of data. The strings it returns are slices of
// data.
func NewReader(data []byte) *Reader {
	return &Reader{s: data}
}

// Err returns the first error of r's reads, or nil.
func (r *Reader) Err() error { return r.err }

// Len returns the number of bytes left.
func (r *Reader) Len() int { return len(r.s) }

// fail records an error about field, unless one is already recorded.
func (r *Reader) fail(field, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...))
	}
}

// truncated records that the n bytes of field are not all there.
func (r *Reader) truncated(field string, n int) {
	r.fail(field, "truncated: want %d bytes, %d left", n, len(r.s))
}

// Preamble reads a preamble and checks it against known, the preambles of
// the formats the caller reads (most have one; a format whose magic
// changed between versions has one per version). It returns the preamble
// of known that matched. An unknown magic is a *MagicError and a known
// magic with another version a *VersionError; the version is not read
// after an unknown magic.
func (r *Reader) Preamble(known ...Preamble) Preamble {
	magic := r.String("magic", maxMagic)
	if r.err != nil {
		return Preamble{}
	}
	i := slices.IndexFunc(known, func(p Preamble) bool { return p.Magic == string(magic) })
	if i < 0 {
		e := &MagicError{Magic: string(magic)}
		for _, p := range known {
			e.Want = append(e.Want, p.Magic)
		}
		r.err = e
		return Preamble{}
	}
	if v := r.Uint32("version"); r.err == nil && v != known[i].Version {
		r.err = &VersionError{Magic: known[i].Magic, Version: v, Want: known[i].Version}
	}
	if r.err != nil {
		return Preamble{}
	}
	return known[i]
}

// Uint8 reads a byte.
func (r *Reader) Uint8(field string) (v uint8) {
	if r.err == nil && !r.s.ReadUint8(&v) {
		r.truncated(field, 1)
	}
	return v
}

// Uint16 reads a big-endian uint16.
func (r *Reader) Uint16(field string) (v uint16) {
	if r.err == nil && !r.s.ReadUint16(&v) {
		r.truncated(field, 2)
	}
	return v
}

// Uint32 reads a big-endian uint32.
func (r *Reader) Uint32(field string) (v uint32) {
	if r.err == nil && !r.s.ReadUint32(&v) {
		r.truncated(field, 4)
	}
	return v
}

// Uint64 reads a big-endian uint64.
func (r *Reader) Uint64(field string) (v uint64) {
	if r.err == nil && !r.s.ReadUint64(&v) {
		r.truncated(field, 8)
	}
	return v
}

// String reads a string of at most max bytes and returns it as a slice of
// the input (empty, not nil, for an empty string; nil after an error). A
// truncated length is reported as field + " length".
func (r *Reader) String(field string, max int) []byte {
	if r.err != nil {
		return nil
	}
	var n uint32
	if !r.s.ReadUint32(&n) {
		r.truncated(field+" length", 4)
		return nil
	}
	if uint64(n) > uint64(max) {
		r.fail(field, "length %d exceeds the maximum of %d", n, max)
		return nil
	}
	var b []byte
	if r.s.ReadBytes(&b, int(n)) {
		// Capped, so that a caller's append cannot write over the input.
		return b[:n:n]
	}
	r.truncated(field, int(n))
	return nil
}

// End records an error if any bytes are left: nothing follows the last
// field of a format.
func (r *Reader) End() {
	if r.err == nil && len(r.s) != 0 {
		r.fail("end", "%d trailing bytes", len(r.s))
	}
}
