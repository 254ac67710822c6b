// Package tpmfault injects faults between icn-agent and its TPM, so that
// tests can show how the agent behaves when the TPM misbehaves: busy,
// locked out, out of memory, answering half a response, hanging, or gone.
//
// An [Injector] is a transport.TPM that forwards commands to the TPM below
// it and, at the points its [Rule]s choose, does something else instead.
// It goes where tpmdev.Options.Wrap puts it, right above the device, so
// that tpmdev's retrier and deadline guard see exactly what a real TPM
// would have done:
//
//	inj := tpmfault.New()
//	tpm, err := tpmdev.Open(ctx, spec, tpmdev.Options{Wrap: inj.Wrap, CommandTimeout: 200 * time.Millisecond})
//	...
//	inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Code(tpm2.TPMRCLockout)))
//	err = tpmseal.Unseal(ctx, tpm, blob, dst) // fails with TPM_RC_LOCKOUT
//
// A rule picks commands by code (or any command), skips the first After
// of them, then applies its [Fault] to the next Count (or, with Forever,
// to all that follow). The faults are:
//
//   - [Code]: answer with a bare response carrying a TPM response code
//     (TPM_RC_RETRY, TPM_RC_LOCKOUT, TPM_RC_OBJECT_MEMORY, ...) without
//     sending the command: what a TPM does when it refuses to start one;
//   - [Error]: fail Send with an error, as a broken transport would;
//   - [ShortRead]: send the command, then return only the first bytes of
//     the response: the TPM ran the command, and its answer was lost;
//   - [Hang]: hold the command until [Injector.Release], then send it: a
//     TPM that stops answering for a while.
//
// Besides rules, [Injector.Vanish] makes every Send fail with an I/O
// error (EIO, as a removed device gives) until [Injector.Restore]: the TPM
// is gone, then back.
//
// Faults are decided in the order commands arrive; the first rule that
// matches a command applies. An Injector is safe for concurrent use, but
// tpmdev never sends two commands at once.
package tpmfault

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// Forever, as Rule.Count, applies the fault to every matching command.
const Forever = -1

// ErrVanished is wrapped by the error every Send returns while the TPM is
// vanished (see Injector.Vanish); the error also wraps syscall.EIO.
var ErrVanished = errors.New("tpmfault: TPM device vanished")

// ErrInjected is the error an Error fault returns when given nil.
var ErrInjected = errors.New("tpmfault: injected transport error")

type kind int

const (
	kindCode kind = iota + 1
	kindError
	kindShort
	kindHang
)

// A Fault is what happens to a command a rule selects. Build one with
// Code, Error, ShortRead or Hang.
type Fault struct {
	kind kind
	rc   tpm2.TPMRC
	err  error
	keep int
}

// Code answers the command with a bare 10-byte response carrying rc,
// without sending it to the TPM.
func Code(rc tpm2.TPMRC) Fault { return Fault{kind: kindCode, rc: rc} }

// Error fails Send with err (ErrInjected if nil), without sending the
// command to the TPM.
func Error(err error) Fault {
	if err == nil {
		err = ErrInjected
	}
	return Fault{kind: kindError, err: err}
}

// ShortRead sends the command to the TPM and returns only the first keep
// bytes of its response (at least 0, at most one byte less than the
// response). keep below 10 cuts into the header.
func ShortRead(keep int) Fault { return Fault{kind: kindShort, keep: max(keep, 0)} }

// Hang holds the command until Injector.Release is called, then sends it
// to the TPM and returns its response, as a TPM that stalls and then
// catches up would.
func Hang() Fault { return Fault{kind: kindHang} }

// String describes the fault for logs and test names.
func (f Fault) String() string {
	switch f.kind {
	case kindCode:
		return fmt.Sprintf("code %#x", uint32(f.rc))
	case kindError:
		return "error: " + f.err.Error()
	case kindShort:
		return fmt.Sprintf("short read of %d bytes", f.keep)
	case kindHang:
		return "hang"
	}
	return "no fault"
}

// A Rule selects commands and the fault to apply to them.
type Rule struct {
	// Command selects commands with this code; 0 selects every command.
	Command tpm2.TPMCC
	// After lets this many selected commands through untouched first:
	// the fault hits the (After+1)th.
	After int
	// Count is how many selected commands get the fault, one after the
	// other; 0 means 1, Forever means all of them.
	Count int
	// Fault is what happens to them.
	Fault Fault
}

// Next returns a rule that applies f to the next command with code cc
// (any command if cc is 0).
func Next(cc tpm2.TPMCC, f Fault) Rule { return Rule{Command: cc, Fault: f} }

// Nth returns a rule that applies f to the nth command from now (n >= 1),
// whatever its code.
func Nth(n int, f Fault) Rule { return Rule{After: max(n-1, 0), Fault: f} }

// Armed is a rule added to an Injector; it tells how often it fired.
type Armed struct {
	rule  Rule
	seen  int // selected commands so far
	fired int
}

// done reports whether the rule will fire no more. Injector.mu held.
func (a *Armed) done() bool {
	count := a.rule.Count
	if count == 0 {
		count = 1
	}
	return count != Forever && a.fired >= count
}

// Injector is a transport.TPM that injects faults into the commands it
// forwards. Create it with New and install it with Wrap.
type Injector struct {
	mu       sync.Mutex
	next     transport.TPM
	rules    []*Armed
	vanished bool
	release  chan struct{} // closed by Release; replaced afterwards
	hung     chan struct{} // receives one value each time a command starts hanging
	sent     int           // commands forwarded to the TPM
	faults   int           // faults injected
}

// New returns an Injector with no rules, forwarding everything. Install it
// with Wrap before use.
func New() *Injector {
	return &Injector{release: make(chan struct{}), hung: make(chan struct{}, 64)}
}

// Wrap makes next the TPM below the injector and returns the injector; it
// has the signature of tpmdev.Options.Wrap. Calling it again (a new TPM
// connection) replaces next and keeps the rules.
func (in *Injector) Wrap(next transport.TPM) transport.TPM {
	in.mu.Lock()
	in.next = next
	in.mu.Unlock()
	return in
}

// Add arms r and returns it, to ask later how often it fired.
func (in *Injector) Add(r Rule) *Armed {
	a := &Armed{rule: r}
	in.mu.Lock()
	in.rules = append(in.rules, a)
	in.mu.Unlock()
	return a
}

// Fired returns how many commands the rule has applied its fault to.
func (in *Injector) Fired(a *Armed) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return a.fired
}

// Clear removes every rule. It does not release a hanging command nor
// restore a vanished TPM.
func (in *Injector) Clear() {
	in.mu.Lock()
	in.rules = nil
	in.mu.Unlock()
}

// Vanish makes every Send fail with an error wrapping ErrVanished and
// syscall.EIO, without reaching the TPM, until Restore.
func (in *Injector) Vanish() {
	in.mu.Lock()
	in.vanished = true
	in.mu.Unlock()
}

// Restore ends Vanish: commands reach the TPM again.
func (in *Injector) Restore() {
	in.mu.Lock()
	in.vanished = false
	in.mu.Unlock()
}

// Hung returns a channel that receives a value each time a command starts
// hanging, so that a test can act while the TPM hangs.
func (in *Injector) Hung() <-chan struct{} { return in.hung }

// Release lets every command hanging now go on to the TPM. Commands that
// hang later wait for the next Release.
func (in *Injector) Release() {
	in.mu.Lock()
	close(in.release)
	in.release = make(chan struct{})
	in.mu.Unlock()
}

// Stats returns how many commands were forwarded to the TPM and how many
// faults were injected (a vanished Send counts as a fault).
func (in *Injector) Stats() (sent, faults int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.sent, in.faults
}

// Send applies the first matching rule to cmd, or forwards it.
func (in *Injector) Send(cmd []byte) ([]byte, error) {
	cc := tpmdev.CommandCode(cmd)
	in.mu.Lock()
	next := in.next
	if next == nil {
		in.mu.Unlock()
		return nil, errors.New("tpmfault: injector used before Wrap")
	}
	if in.vanished {
		in.faults++
		in.mu.Unlock()
		return nil, fmt.Errorf("%w: write command %#x: %w", ErrVanished, uint32(cc), syscall.EIO)
	}
	var fault *Fault
	for _, a := range in.rules {
		if a.done() || (a.rule.Command != 0 && a.rule.Command != cc) {
			continue
		}
		a.seen++
		if a.seen <= a.rule.After {
			continue
		}
		a.fired++
		f := a.rule.Fault
		fault = &f
		break
	}
	release := in.release
	if fault != nil {
		in.faults++
	}
	if fault == nil || fault.kind == kindShort || fault.kind == kindHang {
		in.sent++
	}
	in.mu.Unlock()

	if fault == nil {
		return next.Send(cmd)
	}
	switch fault.kind {
	case kindCode:
		return response(fault.rc), nil
	case kindError:
		return nil, fault.err
	case kindShort:
		rsp, err := next.Send(cmd)
		if err != nil {
			return nil, err
		}
		return rsp[:min(fault.keep, max(len(rsp)-1, 0))], nil
	case kindHang:
		select {
		case in.hung <- struct{}{}:
		default:
		}
		<-release
		return next.Send(cmd)
	}
	return next.Send(cmd)
}

// response builds a bare TPM response: TPM_ST_NO_SESSIONS, size 10, rc.
func response(rc tpm2.TPMRC) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint16(b[0:2], uint16(tpm2.TPMSTNoSessions))
	binary.BigEndian.PutUint32(b[2:6], 10)
	binary.BigEndian.PutUint32(b[6:10], uint32(rc))
	return b
}
