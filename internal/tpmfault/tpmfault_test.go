package tpmfault

import (
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// echo is a fake TPM: it answers every command with a 20-byte success
// response and records the codes it saw.
type echo struct {
	mu  sync.Mutex
	got []tpm2.TPMCC
}

func (e *echo) Send(cmd []byte) ([]byte, error) {
	e.mu.Lock()
	e.got = append(e.got, tpmdev.CommandCode(cmd))
	e.mu.Unlock()
	rsp := make([]byte, 20)
	binary.BigEndian.PutUint16(rsp, uint16(tpm2.TPMSTNoSessions))
	binary.BigEndian.PutUint32(rsp[2:], 20)
	return rsp, nil
}

func (e *echo) seen() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

func command(cc tpm2.TPMCC) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint16(b, uint16(tpm2.TPMSTNoSessions))
	binary.BigEndian.PutUint32(b[2:], 10)
	binary.BigEndian.PutUint32(b[6:], uint32(cc))
	return b
}

// outcome is what one Send did, in a form tests can compare.
type outcome struct {
	rc     tpm2.TPMRC // response code, if a whole response came back
	length int        // response length
	err    bool
}

func send(t *testing.T, in *Injector, cc tpm2.TPMCC) outcome {
	t.Helper()
	rsp, err := in.Send(command(cc))
	if err != nil {
		return outcome{err: true}
	}
	return outcome{rc: tpmdev.ResponseCode(rsp), length: len(rsp)}
}

func TestRules(t *testing.T) {
	const (
		load   = tpm2.TPMCCLoad
		unseal = tpm2.TPMCCUnseal
	)
	ok := outcome{rc: tpm2.TPMRCSuccess, length: 20}
	retry := outcome{rc: tpm2.TPMRCRetry, length: 10}
	tests := []struct {
		name     string
		rules    []Rule
		commands []tpm2.TPMCC
		want     []outcome
		wantSent int // commands that reached the TPM
	}{
		{
			name:     "no rule forwards",
			commands: []tpm2.TPMCC{load, unseal},
			want:     []outcome{ok, ok},
			wantSent: 2,
		},
		{
			name:     "next command with a code",
			rules:    []Rule{Next(unseal, Code(tpm2.TPMRCRetry))},
			commands: []tpm2.TPMCC{load, unseal, unseal},
			want:     []outcome{ok, retry, ok},
			wantSent: 2,
		},
		{
			name:     "nth command whatever its code",
			rules:    []Rule{Nth(3, Code(tpm2.TPMRCLockout))},
			commands: []tpm2.TPMCC{load, load, unseal, load},
			want:     []outcome{ok, ok, {rc: tpm2.TPMRCLockout, length: 10}, ok},
			wantSent: 3,
		},
		{
			name:     "count consecutive",
			rules:    []Rule{{Command: unseal, Count: 2, Fault: Code(tpm2.TPMRCRetry)}},
			commands: []tpm2.TPMCC{unseal, load, unseal, unseal},
			want:     []outcome{retry, ok, retry, ok},
			wantSent: 2,
		},
		{
			name:     "forever",
			rules:    []Rule{{Command: unseal, Count: Forever, Fault: Code(tpm2.TPMRCRetry)}},
			commands: []tpm2.TPMCC{unseal, unseal, unseal, load},
			want:     []outcome{retry, retry, retry, ok},
			wantSent: 1,
		},
		{
			name:     "after skips matching commands only",
			rules:    []Rule{{Command: unseal, After: 1, Fault: Error(nil)}},
			commands: []tpm2.TPMCC{unseal, load, unseal, unseal},
			want:     []outcome{ok, ok, {err: true}, ok},
			wantSent: 3,
		},
		{
			name:     "short read sends and truncates",
			rules:    []Rule{Next(load, ShortRead(4))},
			commands: []tpm2.TPMCC{load, load},
			want:     []outcome{{rc: tpm2.TPMRCFailure, length: 4}, ok},
			wantSent: 2,
		},
		{
			name:     "short read never returns the whole response",
			rules:    []Rule{Next(load, ShortRead(1000))},
			commands: []tpm2.TPMCC{load},
			want:     []outcome{{rc: tpm2.TPMRCSuccess, length: 19}},
			wantSent: 1,
		},
		{
			name:     "first matching rule wins",
			rules:    []Rule{Next(0, Code(tpm2.TPMRCObjectMemory)), Next(0, Code(tpm2.TPMRCSessionMemory))},
			commands: []tpm2.TPMCC{load, load, load},
			want:     []outcome{{rc: tpm2.TPMRCObjectMemory, length: 10}, {rc: tpm2.TPMRCSessionMemory, length: 10}, ok},
			wantSent: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpm := &echo{}
			in := New()
			in.Wrap(tpm)
			for _, r := range tt.rules {
				in.Add(r)
			}
			for i, cc := range tt.commands {
				if got := send(t, in, cc); got != tt.want[i] {
					t.Errorf("command %d (%#x): %+v; want %+v", i, uint32(cc), got, tt.want[i])
				}
			}
			if n := tpm.seen(); n != tt.wantSent {
				t.Errorf("%d commands reached the TPM; want %d", n, tt.wantSent)
			}
			if sent, _ := in.Stats(); sent != tt.wantSent {
				t.Errorf("Stats says %d sent; want %d", sent, tt.wantSent)
			}
		})
	}
}

func TestFired(t *testing.T) {
	in := New()
	in.Wrap(&echo{})
	a := in.Add(Rule{Command: tpm2.TPMCCUnseal, Count: 2, Fault: Code(tpm2.TPMRCRetry)})
	for range 5 {
		send(t, in, tpm2.TPMCCUnseal)
	}
	if n := in.Fired(a); n != 2 {
		t.Fatalf("rule fired %d times; want 2", n)
	}
	if _, faults := in.Stats(); faults != 2 {
		t.Fatalf("Stats says %d faults; want 2", faults)
	}
	in.Add(Rule{Count: Forever, Fault: Code(tpm2.TPMRCRetry)})
	in.Clear()
	if got := send(t, in, tpm2.TPMCCLoad); got.err || got.rc != tpm2.TPMRCSuccess {
		t.Fatalf("after Clear: %+v; want success", got)
	}
}

func TestVanishAndRestore(t *testing.T) {
	tpm := &echo{}
	in := New()
	in.Wrap(tpm)
	in.Vanish()
	for range 3 {
		_, err := in.Send(command(tpm2.TPMCCLoad))
		if !errors.Is(err, ErrVanished) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("Send while vanished: %v; want ErrVanished and EIO", err)
		}
	}
	if n := tpm.seen(); n != 0 {
		t.Fatalf("%d commands reached a vanished TPM", n)
	}
	in.Restore()
	if got := send(t, in, tpm2.TPMCCLoad); got.err || got.rc != tpm2.TPMRCSuccess {
		t.Fatalf("after Restore: %+v; want success", got)
	}
}

func TestHangUntilRelease(t *testing.T) {
	tpm := &echo{}
	in := New()
	in.Wrap(tpm)
	in.Add(Next(tpm2.TPMCCUnseal, Hang()))
	done := make(chan outcome, 1)
	go func() {
		rsp, err := in.Send(command(tpm2.TPMCCUnseal))
		done <- outcome{rc: tpmdev.ResponseCode(rsp), length: len(rsp), err: err != nil}
	}()
	select {
	case <-in.Hung():
	case <-time.After(10 * time.Second):
		t.Fatal("the command never started hanging")
	}
	select {
	case got := <-done:
		t.Fatalf("hanging command returned before Release: %+v", got)
	default:
	}
	if n := tpm.seen(); n != 0 {
		t.Fatalf("hanging command reached the TPM before Release")
	}
	in.Release()
	select {
	case got := <-done:
		if got.err || got.rc != tpm2.TPMRCSuccess {
			t.Fatalf("released command: %+v; want the TPM's success", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Release did not release the command")
	}
	if n := tpm.seen(); n != 1 {
		t.Fatalf("%d commands reached the TPM after Release; want 1", n)
	}
	// The rule is spent: the next command goes straight through.
	if got := send(t, in, tpm2.TPMCCUnseal); got.err || got.rc != tpm2.TPMRCSuccess {
		t.Fatalf("after the hang: %+v", got)
	}
}

func TestUnwrapped(t *testing.T) {
	if _, err := New().Send(command(tpm2.TPMCCLoad)); err == nil {
		t.Fatal("Send before Wrap succeeded")
	}
}
