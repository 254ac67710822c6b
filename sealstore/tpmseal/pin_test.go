package tpmseal

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
)

func TestPINAuthValue(t *testing.T) {
	// A PIN whose SHA-256 has a zero byte, found by search (the test
	// checks that it does).
	var zeroPIN []byte
	for i := 0; zeroPIN == nil; i++ {
		p := []byte("pin-" + string(rune('0'+i%10)) + strings.Repeat("x", i/10))
		if h := sha256.Sum256(p); bytes.IndexByte(h[:], 0) >= 0 {
			zeroPIN = p
		}
	}
	h := sha256.Sum256([]byte("1234"))
	tests := []struct {
		name string
		pin  []byte
		want []byte // nil: any value without zero bytes
	}{
		{"digest without zero bytes", []byte("1234"), h[:]},
		{"digest with a zero byte", zeroPIN, nil},
		{"empty", nil, nil},
	}
	if bytes.IndexByte(h[:], 0) >= 0 {
		t.Fatalf("SHA-256 of 1234 has a zero byte; pick another PIN for the test")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PINAuthValue(tt.pin)
			if len(got) != 32 || bytes.IndexByte(got, 0) >= 0 {
				t.Errorf("PINAuthValue = %x: want 32 bytes without zero", got)
			}
			if tt.want != nil && !bytes.Equal(got, tt.want) {
				t.Errorf("PINAuthValue = %x, want %x", got, tt.want)
			}
			if !bytes.Equal(PINAuthValue(tt.pin), got) {
				t.Errorf("PINAuthValue is not deterministic")
			}
		})
	}
	// The documented rule: the first iterate without zero bytes.
	first := sha256.Sum256(zeroPIN)
	next := sha256.Sum256(first[:])
	if got := PINAuthValue(zeroPIN); bytes.IndexByte(next[:], 0) < 0 && !bytes.Equal(got, next[:]) {
		t.Errorf("PINAuthValue(%q) = %x, want SHA256(SHA256(PIN)) = %x", zeroPIN, got, next)
	}
}
