package tpmdev

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// fixed answers every command with rsp, or err.
type fixed struct {
	rsp []byte
	err error
}

func (f fixed) Send([]byte) ([]byte, error) { return f.rsp, f.err }

func commandBytes(cc tpm2.TPMCC) []byte {
	b := make([]byte, headerSize)
	binary.BigEndian.PutUint32(b[2:6], headerSize)
	binary.BigEndian.PutUint32(b[6:10], uint32(cc))
	return b
}

// TestGuardFramingAndObserve: the guard rejects responses whose length
// disagrees with their header, reports every command to the observer, and
// marks the TPM unsure after a failure so that Run flushes leftovers.
func TestGuardFramingAndObserve(t *testing.T) {
	long := append(response(tpm2.TPMRCSuccess), 0xff)
	tests := []struct {
		name    string
		next    fixed
		wantErr error
		wantRC  tpm2.TPMRC
	}{
		{"success", fixed{rsp: response(tpm2.TPMRCSuccess)}, nil, tpm2.TPMRCSuccess},
		{"tpm error code", fixed{rsp: response(tpm2.TPMRCLockout)}, nil, tpm2.TPMRCLockout},
		{"cut in the header", fixed{rsp: response(tpm2.TPMRCSuccess)[:6]}, ErrMalformedResponse, 0},
		{"longer than announced", fixed{rsp: long}, ErrMalformedResponse, 0},
		{"transport error", fixed{err: errors.New("broken pipe")}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type call struct {
				cc  tpm2.TPMCC
				rc  tpm2.TPMRC
				err error
			}
			var got []call
			g := &guard{next: tt.next, timeout: time.Second, observe: func(cc tpm2.TPMCC, d time.Duration, rc tpm2.TPMRC, err error) {
				if d < 0 {
					t.Errorf("negative duration %v", d)
				}
				got = append(got, call{cc, rc, err})
			}}
			rsp, err := g.Send(commandBytes(tpm2.TPMCCUnseal))
			failed := tt.next.err != nil || tt.wantErr != nil
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Send: %v; want %v", err, tt.wantErr)
			case failed && (err == nil || rsp != nil):
				t.Fatalf("Send = %x, %v; want an error and no response", rsp, err)
			case !failed && (err != nil || ResponseCode(rsp) != tt.wantRC):
				t.Fatalf("Send = %x, %v; want rc %v", rsp, err, tt.wantRC)
			}
			if len(got) != 1 || got[0].cc != tpm2.TPMCCUnseal || got[0].rc != tt.wantRC || (got[0].err != nil) != failed {
				t.Fatalf("observed %+v", got)
			}
			if unsure := g.takeUnsure(); unsure != failed {
				t.Fatalf("unsure = %v after the command; want %v", unsure, failed)
			}
			if g.takeUnsure() {
				t.Fatal("takeUnsure did not clear the mark")
			}
		})
	}
}
