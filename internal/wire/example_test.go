package wire_test

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/icn/icn-agent/internal/wire"
)

// A format of its own: the preamble, a name of at most 64 bytes, a count of
// PCRs and that many one-byte indexes, a creation time.
var notePreamble = wire.Preamble{Magic: "icn-agent-note", Version: 1}

var (
	errMalformed   = errors.New("note: malformed")
	errUnsupported = errors.New("note: unsupported version")
)

type note struct {
	name    string
	pcrs    []uint8
	created time.Time
}

func (n *note) marshal() ([]byte, error) {
	var b cryptobyte.Builder
	notePreamble.Add(&b)
	wire.AddString(&b, []byte(n.name))
	b.AddUint32(uint32(len(n.pcrs)))
	for _, p := range n.pcrs {
		b.AddUint8(p)
	}
	b.AddUint64(uint64(n.created.Unix()))
	return b.Bytes()
}

func parseNote(data []byte) (*note, error) {
	r := wire.NewReader(data)
	r.Preamble(notePreamble)
	n := &note{name: string(r.String("name", 64))}
	count := r.Uint32("pcr count")
	// The count decides how much to read: check errors before using it.
	if err := r.Err(); err != nil {
		return nil, noteError(err)
	}
	if count > 24 {
		return nil, fmt.Errorf("%w: pcr count: %d, more than 24", errMalformed, count)
	}
	for range count {
		n.pcrs = append(n.pcrs, r.Uint8("pcr"))
	}
	n.created = time.Unix(int64(r.Uint64("created")), 0).UTC()
	r.End()
	if err := r.Err(); err != nil {
		return nil, noteError(err)
	}
	return n, nil
}

// noteError wraps an error of the Reader in the format's sentinels.
func noteError(err error) error {
	if _, ok := errors.AsType[*wire.VersionError](err); ok {
		return fmt.Errorf("%w: %w", errUnsupported, err)
	}
	return fmt.Errorf("%w: %w", errMalformed, err)
}

func Example() {
	data, err := (&note{name: "work", pcrs: []uint8{0, 7}, created: time.Unix(1700000000, 0)}).marshal()
	if err != nil {
		panic(err)
	}
	fmt.Printf("%x\n", data)
	n, err := parseNote(data)
	fmt.Println(n.name, n.pcrs, n.created.Format(time.RFC3339), err)

	_, err = parseNote(data[:len(data)-3])
	fmt.Println(err)
	_, err = parseNote(append(data, 0))
	fmt.Println(err)
	data[4+len(notePreamble.Magic)+3] = 2 // the version
	_, err = parseNote(data)
	fmt.Println(err, errors.Is(err, errUnsupported))
	// Output:
	// 0000000e69636e2d6167656e742d6e6f74650000000100000004776f726b000000020007000000006553f100
	// work [0 7] 2023-11-14T22:13:20Z <nil>
	// note: malformed: created: truncated: want 8 bytes, 5 left
	// note: malformed: end: 1 trailing bytes
	// note: unsupported version: icn-agent-note version 2 (this icn-agent reads version 1) true
}
