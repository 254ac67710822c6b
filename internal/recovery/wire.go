package recovery

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/icn/icn-agent/internal/wire"
)

// Backup plaintexts and migration files are in the binary encoding of
// internal/wire.

// ErrMalformed is wrapped by every error about a backup plaintext, SRK file
// or migration file that is not well-formed.
var ErrMalformed = errors.New("recovery: malformed file")

// ErrUnsupportedVersion is wrapped by errors about a file of a format
// version this icn-agent does not read, typically written by a newer one.
var ErrUnsupportedVersion = errors.New("recovery: unsupported format version")

func malformed(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
}

// wireError maps an error of a wire.Reader over a file called what
// ("backup", "migration file") to ErrMalformed, or ErrUnsupportedVersion
// for another version.
func wireError(what string, err error) error {
	if v, ok := errors.AsType[*wire.VersionError](err); ok {
		return fmt.Errorf("%w: %s version %d (this icn-agent reads version %d)", ErrUnsupportedVersion, what, v.Version, v.Want)
	}
	if _, ok := errors.AsType[*wire.MagicError](err); ok {
		return malformed("magic", "not an icn-agent %s", what)
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
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
