package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// testPreamble and record are a small format with a field of every kind,
// for the tests and the fuzzer.
var testPreamble = Preamble{Magic: "icn-agent-test", Version: 3}

type record struct {
	name  []byte
	kind  uint8
	bank  uint16
	count uint32
	time  uint64
}

func (v record) marshal() ([]byte, error) {
	var b cryptobyte.Builder
	testPreamble.Add(&b)
	AddString(&b, v.name)
	b.AddUint8(v.kind)
	b.AddUint16(v.bank)
	b.AddUint32(v.count)
	b.AddUint64(v.time)
	return b.Bytes()
}

func parseRecord(data []byte) (record, error) {
	r := NewReader(data)
	r.Preamble(testPreamble)
	v := record{
		name:  r.String("name", 16),
		kind:  r.Uint8("kind"),
		bank:  r.Uint16("bank"),
		count: r.Uint32("count"),
		time:  r.Uint64("time"),
	}
	r.End()
	return v, r.Err()
}

// goodRecord is the encoding of record{"abc", 1, 0x0b, 24, 1700000000},
// written out by hand.
const goodRecord = "0000000e" + "69636e2d6167656e742d74657374" + "00000003" + // preamble
	"00000003" + "616263" + // name
	"01" + "000b" + "00000018" + "000000006553f100"

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	want := record{name: []byte("abc"), kind: 1, bank: 0x0b, count: 24, time: 1700000000}
	data, err := want.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, mustHex(t, goodRecord)) {
		t.Fatalf("encoding\n%x\nwant\n%s", data, goodRecord)
	}
	got, err := parseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.name, want.name) || got.kind != want.kind || got.bank != want.bank || got.count != want.count || got.time != want.time {
		t.Fatalf("parsed %+v, want %+v", got, want)
	}
}

func TestFieldErrors(t *testing.T) {
	good := mustHex(t, goodRecord)
	pre := len(mustHex(t, "0000000e69636e2d6167656e742d7465737400000003"))
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"no name length", good[:pre+2], "name length: truncated: want 4 bytes, 2 left"},
		{"name cut", good[:pre+5], "name: truncated: want 3 bytes, 1 left"},
		{"name too long", append(append(bytes.Clone(good[:pre]), 0, 0, 0, 17), make([]byte, 40)...), "name: length 17 exceeds the maximum of 16"},
		{"huge length", append(bytes.Clone(good[:pre]), 0xff, 0xff, 0xff, 0xff), "name: length 4294967295 exceeds the maximum of 16"},
		{"no kind", good[:pre+7], "kind: truncated: want 1 bytes, 0 left"},
		{"bank cut", good[:pre+9], "bank: truncated: want 2 bytes, 1 left"},
		{"count cut", good[:pre+12], "count: truncated: want 4 bytes, 2 left"},
		{"time cut", good[:len(good)-1], "time: truncated: want 8 bytes, 7 left"},
		{"trailing", append(bytes.Clone(good), 0), "end: 1 trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseRecord(tt.data)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if _, ok := errors.AsType[*MagicError](err); ok {
				t.Fatal("a field error is a MagicError")
			}
		})
	}
}

// TestSticky: after the first error every read is a no-op returning a zero
// value, and Err keeps the first error.
func TestSticky(t *testing.T) {
	r := NewReader([]byte{0, 0, 0, 9, 'a'})
	if s := r.String("first", 8); s != nil {
		t.Fatalf("String after a bad length = %q", s)
	}
	first := r.Err()
	if first == nil || !strings.HasPrefix(first.Error(), "first: ") {
		t.Fatalf("Err = %v", first)
	}
	if r.Uint8("a") != 0 || r.Uint16("b") != 0 || r.Uint32("c") != 0 || r.Uint64("d") != 0 || r.String("e", 8) != nil {
		t.Fatal("a read after an error returned a value")
	}
	r.Preamble(testPreamble)
	r.End()
	if r.Err() != first {
		t.Fatalf("Err changed to %v", r.Err())
	}
}

func TestPreamble(t *testing.T) {
	other := Preamble{Magic: "icn-agent-test-v2", Version: 2}
	encode := func(p Preamble) []byte {
		var b cryptobyte.Builder
		p.Add(&b)
		return b.BytesOrPanic()
	}

	r := NewReader(encode(other))
	if got := r.Preamble(testPreamble, other); got != other || r.Err() != nil {
		t.Fatalf("Preamble = %+v, %v; want %+v", got, r.Err(), other)
	}

	r = NewReader(encode(Preamble{Magic: "icn-agent-test", Version: 4}))
	r.Preamble(testPreamble, other)
	v, ok := errors.AsType[*VersionError](r.Err())
	if !ok || v.Magic != testPreamble.Magic || v.Version != 4 || v.Want != 3 {
		t.Fatalf("newer version: error %#v", r.Err())
	}
	if want := "icn-agent-test version 4 (this icn-agent reads version 3)"; v.Error() != want {
		t.Fatalf("error %q, want %q", v, want)
	}

	r = NewReader(append(encode(Preamble{Magic: "icn-agent-tost"}), "anything"...))
	r.Preamble(testPreamble, other)
	m, ok := errors.AsType[*MagicError](r.Err())
	if !ok || m.Magic != "icn-agent-tost" || len(m.Want) != 2 {
		t.Fatalf("other magic: error %#v", r.Err())
	}
	if want := `magic: "icn-agent-tost", want "icn-agent-test" or "icn-agent-test-v2"`; m.Error() != want {
		t.Fatalf("error %q, want %q", m, want)
	}

	// A magic over 64 bytes is too long to be one, and the version after
	// a known magic must be there: neither is a preamble error.
	for _, data := range [][]byte{
		encode(Preamble{Magic: strings.Repeat("m", 65)}),
		encode(testPreamble)[:4+len(testPreamble.Magic)+2],
	} {
		r = NewReader(data)
		r.Preamble(testPreamble)
		_, magic := errors.AsType[*MagicError](r.Err())
		_, version := errors.AsType[*VersionError](r.Err())
		if r.Err() == nil || magic || version {
			t.Errorf("%x: error %v, want a field error", data, r.Err())
		}
	}
}

func TestOpens(t *testing.T) {
	good := mustHex(t, goodRecord)
	for _, tt := range []struct {
		data []byte
		want bool
	}{
		{good, true},
		{good[:4+len(testPreamble.Magic)], true}, // the version is not read
		{good[:4+len(testPreamble.Magic)-1], false},
		{nil, false},
		{[]byte("icn-agent-test"), false},
	} {
		if got := testPreamble.Opens(tt.data); got != tt.want {
			t.Errorf("Opens(%x) = %v, want %v", tt.data, got, tt.want)
		}
	}
}

// TestStringAliasesInput: strings are slices of the input, not copies (what
// lets a parser copy a secret only into locked memory), and capped so that
// appending to one cannot write over the input.
func TestStringAliasesInput(t *testing.T) {
	data := []byte{0, 0, 0, 2, 'a', 'b', 'c', 'd'}
	r := NewReader(data)
	s := r.String("s", 8)
	if r.Err() != nil || &s[0] != &data[4] {
		t.Fatalf("String = %q, %v: not a slice of the input", s, r.Err())
	}
	if cap(s) != 2 {
		t.Fatalf("cap %d, want 2", cap(s))
	}
	_ = append(s, 'x')
	if data[6] != 'c' {
		t.Fatal("appending to a string wrote over the input")
	}
	if e := NewReader([]byte{0, 0, 0, 0}).String("empty", 8); e == nil || len(e) != 0 {
		t.Fatalf("empty string = %#v, want empty and not nil", e)
	}
}

// TestNoAllocations: reading a well-formed input allocates nothing beyond
// the Reader; a hostile length is refused without allocating for it.
func TestNoAllocations(t *testing.T) {
	good := mustHex(t, goodRecord)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := parseRecord(good); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("parsing allocates %v times", n)
	}
}

// TestFixedBuilder: a fixed Builder over a buffer of the right size writes
// every field, strings included, into that buffer and nowhere else, which
// is how a secret is encoded straight into locked memory.
func TestFixedBuilder(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	buf := make([]byte, 4+len(secret)+8)
	b := cryptobyte.NewFixedBuilder(buf[:0])
	AddString(b, secret)
	b.AddUint64(7)
	out, err := b.Bytes()
	if err != nil || len(out) != len(buf) || &out[0] != &buf[0] {
		t.Fatalf("fixed builder: %v, %d bytes: did not write into the buffer", err, len(out))
	}
	b = cryptobyte.NewFixedBuilder(buf[: 0 : len(buf)-1])
	AddString(b, secret)
	b.AddUint64(7)
	if _, err := b.Bytes(); err == nil {
		t.Fatal("a fixed builder grew past its buffer")
	}
}

// FuzzRoundTrip: the Reader never panics, and an input it reads without
// error is exactly what writing the values back gives: one encoding per
// value.
func FuzzRoundTrip(f *testing.F) {
	good := mustHex(f, goodRecord)
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Add(append(bytes.Clone(good), 0))
	f.Add(bytes.Replace(good, []byte("test"), []byte("tost"), 1))
	f.Add(bytes.Replace(good, []byte{0, 0, 0, 3, 0, 0, 0, 3}, []byte{0, 0, 0, 4, 0, 0, 0, 3}, 1))
	f.Add(bytes.Replace(good, []byte{0, 0, 0, 3, 'a'}, []byte{0xff, 0xff, 0xff, 0xff, 'a'}, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := parseRecord(data)
		if err != nil {
			return
		}
		out, err := v.marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("read %x, wrote back %x", data, out)
		}
	})
}
