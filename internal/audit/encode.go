package audit

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends r's line to b: exactly the bytes json.Marshal
// writes for r (a test holds it to that), without reflection, so that a
// busy agent's records cost little. Checkpoints, which carry a stamp and
// are rare, go through json.Marshal.
func appendRecord(b []byte, r *Record) ([]byte, error) {
	if r.Stamp != nil {
		line, err := json.Marshal(r)
		return append(b, line...), err
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":`...)
	b = appendString(b, r.Event)
	b = appendField(b, "key", r.Key)
	b = appendField(b, "name", r.Name)
	b = appendField(b, "backend", r.Backend)
	if r.PeerUID != nil {
		b = append(b, `,"peer_uid":`...)
		b = strconv.AppendInt(b, int64(*r.PeerUID), 10)
	}
	if r.PeerPID != 0 {
		b = append(b, `,"peer_pid":`...)
		b = strconv.AppendInt(b, int64(r.PeerPID), 10)
	}
	b = appendField(b, "peer_exe", r.PeerExe)
	b = appendField(b, "dest", r.Dest)
	b = appendField(b, "data_sha256", r.DataSHA256)
	b = appendField(b, "outcome", r.Outcome)
	if r.Covers != 0 {
		b = append(b, `,"covers":`...)
		b = strconv.AppendUint(b, r.Covers, 10)
	}
	b = appendField(b, "head", r.Head)
	b = append(b, `,"prev":`...)
	b = appendString(b, r.Prev)
	return append(b, '}'), nil
}

// appendField appends ,"name":"value" unless value is empty (omitempty).
func appendField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":`...)
	return appendString(b, value)
}

// appendString appends s as a JSON string the way encoding/json does:
// quotes, backslashes and control characters escaped, '<', '>' and '&'
// as \u003c, \u003e, \u0026, U+2028 and U+2029 escaped, invalid UTF-8 as
// U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
