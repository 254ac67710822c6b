package tpmfault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmfault"
	"github.com/icn/icn-agent/internal/tpmtrace"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// These tests drive sealstore on the in-process simulator through the
// daemon's transport stack with a fault injector at the bottom:
//
//	sealstore ── retrier ── guard ── sent ── Injector ── reached ── simulator
//
// "sent" counts what tpmdev sent (retries included), "reached" what got
// to the TPM. The simulator is one per process: no t.Parallel.

// hangTimeout is the command timeout of the rigs: short, so that a hung
// command costs a test little time.
const hangTimeout = 200 * time.Millisecond

// rig is a simulator with a sealed identity and a fault injector.
type rig struct {
	tpm     *tpmdev.TPM
	inj     *tpmfault.Injector
	sent    *tpmtrace.Counter
	reached *tpmtrace.Counter
	blob    *sealstore.Blob
	seed    []byte
	// answered receives a value when a command sent through the
	// injector has returned (dropped while one is waiting to be read).
	answered chan struct{}
}

// answers is the transport right below tpmdev's guard: it announces each
// command that has returned, so that a test knows when a command the
// guard gave up on is over.
type answers struct {
	next     transport.TPM
	answered chan<- struct{}
}

func (a answers) Send(cmd []byte) ([]byte, error) {
	defer func() {
		select {
		case a.answered <- struct{}{}:
		default:
		}
	}()
	return a.next.Send(cmd)
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{inj: tpmfault.New(), answered: make(chan struct{}, 1)}
	wrap := func(next transport.TPM) transport.TPM {
		r.reached = tpmtrace.NewCounter(next)
		r.sent = tpmtrace.NewCounter(r.inj.Wrap(r.reached))
		return answers{next: r.sent, answered: r.answered}
	}
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim},
		tpmdev.Options{StateDir: t.TempDir(), Wrap: wrap, CommandTimeout: hangTimeout})
	if err != nil {
		t.Fatal(err)
	}
	r.tpm = tpm
	t.Cleanup(func() {
		r.inj.Restore()
		r.inj.Release()
		tpm.Close()
	})
	r.seed = make([]byte, sealstore.SeedSize)
	rand.Read(r.seed)
	if r.blob, err = tpmseal.Seal(context.Background(), tpm, r.seed, tpmseal.SealOptions{Name: "work"}); err != nil {
		t.Fatal(err)
	}
	return r
}

// unseal unseals the rig's identity and checks the seed if it succeeds.
// A watchdog fails the test if the call does not return: whatever the
// fault, a TPM call must end.
func (r *rig) unseal(t *testing.T) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		dst := make([]byte, sealstore.SeedSize)
		err := tpmseal.Unseal(context.Background(), r.tpm, r.blob, dst)
		if err == nil && !bytes.Equal(dst, r.seed) {
			err = errors.New("unsealed the wrong seed")
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Unseal hung")
		return nil
	}
}

// mustRecover checks that, the fault gone, unsealing works again and the
// TPM holds nothing but the SRK: a fault must not leak objects or
// sessions, which a TPM has only a few of.
func (r *rig) mustRecover(t *testing.T) {
	t.Helper()
	if err := r.unseal(t); err != nil {
		t.Fatalf("unseal after the fault: %v", err)
	}
	loaded := map[tpm2.TPMHandle]bool{}
	err := r.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
			rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tpm)
			if err != nil {
				return err
			}
			hs, err := rsp.CapabilityData.Data.Handles()
			if err != nil {
				return err
			}
			for _, h := range hs.Handle {
				if ht := h >> 24; ht == 0x80 || ht == 0x02 || ht == 0x03 {
					loaded[h] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 {
		t.Errorf("loaded after recovery: %#x; want only the SRK", slices.Sorted(maps.Keys(loaded)))
	}
}

// TestFaults injects each fault into a cold unseal and checks the error
// the caller sees, how often the command was sent, and that the next
// unseal works.
func TestFaults(t *testing.T) {
	tests := []struct {
		name string
		rule tpmfault.Rule
		// check inspects the unseal's error.
		check func(t *testing.T, err error)
		// cc is the command whose sends are counted; wantSent and
		// wantReached are how often tpmdev sent it and how often it
		// reached the TPM (-1: at least once).
		cc                    tpm2.TPMCC
		wantSent, wantReached int
	}{
		{
			name:  "retry three times then success",
			rule:  tpmfault.Rule{Command: tpm2.TPMCCUnseal, Count: 3, Fault: tpmfault.Code(tpm2.TPMRCRetry)},
			check: wantNoError,
			cc:    tpm2.TPMCCUnseal, wantSent: 4, wantReached: 1,
		},
		{
			name:  "yielded then success",
			rule:  tpmfault.Next(tpm2.TPMCCLoad, tpmfault.Code(tpm2.TPMRCYielded)),
			check: wantNoError,
			cc:    tpm2.TPMCCLoad, wantSent: 2, wantReached: 1,
		},
		{
			name:  "retry forever is a bounded error",
			rule:  tpmfault.Rule{Command: tpm2.TPMCCUnseal, Count: tpmfault.Forever, Fault: tpmfault.Code(tpm2.TPMRCRetry)},
			check: wantRC(tpm2.TPMRCRetry, "TPM_RC_RETRY"),
			cc:    tpm2.TPMCCUnseal, wantSent: 8, wantReached: 0,
		},
		{
			name:  "lockout is reported and not retried",
			rule:  tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Code(tpm2.TPMRCLockout)),
			check: wantRC(tpm2.TPMRCLockout, "lockout"),
			cc:    tpm2.TPMCCUnseal, wantSent: 1, wantReached: 0,
		},
		{
			name:  "object memory",
			rule:  tpmfault.Next(tpm2.TPMCCLoad, tpmfault.Code(tpm2.TPMRCObjectMemory)),
			check: wantRC(tpm2.TPMRCObjectMemory, "out of memory for object contexts"),
			cc:    tpm2.TPMCCLoad, wantSent: 1, wantReached: 0,
		},
		{
			name:  "session memory",
			rule:  tpmfault.Next(tpm2.TPMCCStartAuthSession, tpmfault.Code(tpm2.TPMRCSessionMemory)),
			check: wantRC(tpm2.TPMRCSessionMemory, "out of memory for session contexts"),
			cc:    tpm2.TPMCCStartAuthSession, wantSent: 1, wantReached: 0,
		},
		{
			name:  "transport error",
			rule:  tpmfault.Next(tpm2.TPMCCPolicyPCR, tpmfault.Error(nil)),
			check: wantIs(tpmfault.ErrInjected, "injected"),
			cc:    tpm2.TPMCCPolicyPCR, wantSent: 1, wantReached: 0,
		},
		{
			name:  "short read of the unseal response",
			rule:  tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.ShortRead(20)),
			check: wantIs(tpmdev.ErrMalformedResponse, "truncated"),
			cc:    tpm2.TPMCCUnseal, wantSent: 1, wantReached: 1,
		},
		{
			name:  "short read inside the header",
			rule:  tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.ShortRead(6)),
			check: wantIs(tpmdev.ErrMalformedResponse, "truncated"),
			cc:    tpm2.TPMCCUnseal, wantSent: 1, wantReached: 1,
		},
		{
			// The TPM loaded the object and its handle was lost: the
			// next call must flush it.
			name:  "short read of the load response",
			rule:  tpmfault.Next(tpm2.TPMCCLoad, tpmfault.ShortRead(30)),
			check: wantIs(tpmdev.ErrMalformedResponse, "truncated"),
			cc:    tpm2.TPMCCLoad, wantSent: 1, wantReached: 1,
		},
		{
			// The session was started and its handle lost.
			name:  "short read of the session response",
			rule:  tpmfault.Next(tpm2.TPMCCStartAuthSession, tpmfault.ShortRead(12)),
			check: wantIs(tpmdev.ErrMalformedResponse, "truncated"),
			cc:    tpm2.TPMCCStartAuthSession, wantSent: 1, wantReached: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			beforeSent, beforeReached := r.sent.Count(tt.cc), r.reached.Count(tt.cc)
			armed := r.inj.Add(tt.rule)
			err := r.unseal(t)
			tt.check(t, err)
			if r.inj.Fired(armed) == 0 {
				t.Fatal("the fault was never injected")
			}
			if got := r.sent.Count(tt.cc) - beforeSent; got != tt.wantSent {
				t.Errorf("command %#x sent %d times; want %d", uint32(tt.cc), got, tt.wantSent)
			}
			if got := r.reached.Count(tt.cc) - beforeReached; got != tt.wantReached {
				t.Errorf("command %#x reached the TPM %d times; want %d", uint32(tt.cc), got, tt.wantReached)
			}
			r.inj.Clear()
			r.mustRecover(t)
		})
	}
}

func wantNoError(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unseal: %v; want success", err)
	}
}

// wantRC checks that err is the TPM response code rc and says text.
func wantRC(rc tpm2.TPMRC, text string) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, rc) || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(text)) {
			t.Fatalf("unseal: %v; want %v saying %q", err, rc, text)
		}
	}
}

func wantIs(target error, text string) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, target) || !strings.Contains(err.Error(), text) {
			t.Fatalf("unseal: %v; want %v saying %q", err, target, text)
		}
	}
}

// TestRepeatedLostResponses shows that handles lost with their responses
// do not pile up: the simulator holds three objects (the SRK and two
// more), so five lost Load responses in a row would exhaust it if nothing
// flushed them.
func TestRepeatedLostResponses(t *testing.T) {
	r := newRig(t)
	for i := range 5 {
		r.inj.Add(tpmfault.Next(tpm2.TPMCCLoad, tpmfault.ShortRead(30)))
		if err := r.unseal(t); !errors.Is(err, tpmdev.ErrMalformedResponse) {
			t.Fatalf("lost response %d: %v; want ErrMalformedResponse", i, err)
		}
	}
	if n := r.reached.Count(tpm2.TPMCCLoad); n < 5 {
		t.Fatalf("only %d loads reached the TPM", n)
	}
	r.mustRecover(t)
}

// TestHang: a command that never answers fails with ErrTimeout after the
// command timeout; while it is still pending, other calls fail fast
// rather than queue; once the TPM answers, unsealing works again.
func TestHang(t *testing.T) {
	r := newRig(t)
	r.inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Hang()))
	err := r.unseal(t)
	if !errors.Is(err, tpmdev.ErrTimeout) {
		t.Fatalf("unseal with a hung TPM: %v; want ErrTimeout", err)
	}
	select {
	case <-r.inj.Hung():
	default:
		t.Fatal("the injector never held a command")
	}
	if err := r.unseal(t); !errors.Is(err, tpmdev.ErrTimeout) || !strings.Contains(err.Error(), "still pending") {
		t.Fatalf("unseal while the hung command is pending: %v; want a fast ErrTimeout", err)
	}
	// The hung command reaches the TPM now; the guard lets commands
	// through again once it has answered. While it hangs the guard sends
	// nothing else, so the first command to return is the released one.
	select {
	case <-r.answered:
	default:
	}
	r.inj.Release()
	select {
	case <-r.answered:
	case <-time.After(10 * time.Second):
		t.Fatal("the released command never returned")
	}
	r.mustRecover(t)
}

// TestVanishedDevice: while the TPM is gone every call fails with an I/O
// error; the TPM comes back power-cycled (its SRK no longer loaded), and
// unsealing works again with the SRK recreated.
func TestVanishedDevice(t *testing.T) {
	r := newRig(t)
	if err := r.unseal(t); err != nil {
		t.Fatal(err)
	}
	r.inj.Vanish()
	for range 3 {
		err := r.unseal(t)
		if !errors.Is(err, tpmfault.ErrVanished) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("unseal with the TPM gone: %v; want an I/O error", err)
		}
	}
	if err := r.tpm.SimulateReboot(); err != nil {
		t.Fatal(err)
	}
	primaries := r.reached.Count(tpm2.TPMCCCreatePrimary)
	r.inj.Restore()
	r.mustRecover(t)
	if n := r.reached.Count(tpm2.TPMCCCreatePrimary) - primaries; n != 1 {
		t.Fatalf("SRK created %d times after the TPM came back; want 1 (reloaded)", n)
	}
}
