package recovery

import (
	"bytes"
	"testing"

	"github.com/icn/icn-agent/internal/wire/wiretest"
)

// TestSeedsRoundTrip: every committed seed that parses is written back
// byte for byte, so the files of earlier icn-agents keep their exact
// encoding.
func TestSeedsRoundTrip(t *testing.T) {
	parsers := map[string]func([]byte) ([]byte, error){
		"FuzzParseBackup": func(data []byte) ([]byte, error) {
			b, err := ParseBackup(data)
			if err != nil {
				return nil, err
			}
			defer b.Destroy()
			m, err := b.marshal()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Destroy()
			return bytes.Clone(m.Bytes()), nil
		},
		"FuzzParseMigration": func(data []byte) ([]byte, error) {
			m, err := ParseMigration(data)
			if err != nil {
				return nil, err
			}
			return m.Marshal()
		},
	}
	wiretest.RoundTrip(t, parsers, bytes.Equal)
}
