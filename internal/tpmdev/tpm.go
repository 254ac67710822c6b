// Package tpmdev opens the TPM and owns it: one connection, one lock, one
// storage root key (SRK) per process.
//
// The same code path serves a kernel device (/dev/tpmrm0), a running swtpm
// (over its unix or TCP server socket) and the in-process reference
// simulator (internal/tpmsim, which registers itself here when a program
// links it in: see RegisterSimulator). Whatever the TPM, commands go through the same stack:
//
//	caller ── Run(ctx, fn) ── retrier ── guard ── [Wrap] ── device / swtpm / simulator
//
// The retrier resends commands the TPM answered with a transient warning
// (TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING) with bounded backoff; the
// guard gives every command a deadline so a hung TPM never hangs a client,
// rejects responses whose length disagrees with their header
// (ErrMalformedResponse) and reports each command to Options.Observe;
// Wrap is where tests count, record or inject faults (internal/tpmfault).
//
// # Waiting and deadlines
//
// A TPM runs one command at a time, so Run holds the TPM's lock while fn
// runs. The lock is a one-slot channel rather than a sync.Mutex, so that
// waiting for it ends when the caller's context does: a request queued
// behind a command that hangs fails instead of hanging too. Every wait
// and every command ends by the earlier of the context's deadline and
// Options.CommandTimeout, with an error wrapping ErrTimeout (and the
// context's error, when the context ended first):
//
//   - the wait for the lock, at most CommandTimeout even without a
//     context deadline;
//   - each command, connecting to swtpm included: the raw transport gets
//     the deadline and ends the exchange itself (a socket or a pollable
//     device); where it cannot, the guard returns at the deadline and
//     leaves the command running on its own goroutine, and later
//     commands fail fast until it returns;
//   - the cleanup after a failed command (see flushLeftoversLocked), at
//     most cleanupTimeout, within the caller's deadline.
//
// So no caller holds the TPM much longer than its own deadline, and a
// caller that wants a bound on a whole request (several Runs, the wait
// included) gives Run a context with that deadline.
//
// The SRK is the TCG ECC P-256 storage key. The persistent handle
// 0x81000001 is used only when ReadPublic shows exactly that template;
// otherwise the SRK is created once per process and kept loaded.
// CreatePrimary is never run per operation: on a real chip it takes
// 50-250 ms.
package tpmdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/adrg/xdg"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/srk"
)

// PersistentSRK is the TCG's reserved handle for the storage root key.
const PersistentSRK = tpm2.TPMHandle(0x81000001)

// Defaults for Options.
const (
	DefaultCommandTimeout = 10 * time.Second
	defaultRetries        = 8
	defaultBackoff        = 20 * time.Millisecond
	// cleanupTimeout bounds the flush after a failed command: a few
	// GetCapability and FlushContext commands, milliseconds even on a
	// slow chip.
	cleanupTimeout = 2 * time.Second
	// minCleanup is the least time worth starting a cleanup with.
	minCleanup = 50 * time.Millisecond
)

// Options configure Open. The zero value is usable.
type Options struct {
	// StateDir keeps the simulator's seed. Default: $XDG_STATE_HOME/icn-agent.
	StateDir string
	// CommandTimeout bounds every TPM command (connecting to swtpm
	// included) and the wait for the TPM at the start of Run; a context
	// deadline that comes first wins. Default: DefaultCommandTimeout.
	CommandTimeout time.Duration
	// FlushStale, on a TPM without a resource manager (swtpm), flushes
	// the transient objects and sessions loaded when Open runs: those a
	// client that died left behind. Only a long-running owner (the agent)
	// should set it: a short command run beside a running agent would
	// flush the agent's storage root key.
	FlushStale bool
	// Wrap, if set, wraps the raw transport: tests use it to count and
	// record commands and to inject faults.
	Wrap func(transport.TPM) transport.TPM
	// Logger receives warnings (simulator in use, stale handles flushed).
	Logger *slog.Logger
	// Observe, if set, is called after every command the guard sends
	// (each attempt of a retried command counts): its command code, how
	// long it took, the response code (0 when err is set) and the error
	// (ErrTimeout, ErrMalformedResponse, a transport error). Metrics use
	// it. It runs on the caller's goroutine with the TPM held: keep it
	// fast.
	Observe func(cc tpm2.TPMCC, d time.Duration, rc tpm2.TPMRC, err error)
}

// DefaultStateDir returns $XDG_STATE_HOME/icn-agent.
func DefaultStateDir() string { return filepath.Join(xdg.StateHome, "icn-agent") }

// SRK is the loaded storage root key. It is the public srk.Key, so that
// a *TPM implements the public packages' TPM interfaces (tpmseal.TPM).
type SRK = srk.Key

// TPM is the process's one connection to its TPM. All access goes through
// Run, which holds the TPM's lock.
type TPM struct {
	spec    Spec
	log     *slog.Logger
	timeout time.Duration // Options.CommandTimeout

	// sem is the TPM's lock: full while someone holds it. A channel
	// rather than a sync.Mutex, so that waiting for it can end with the
	// waiter's context (see lock). The fields below are guarded by it.
	sem    chan struct{}
	raw    transport.TPMCloser
	guard  *guard
	tpm    transport.TPM // the full stack callers see
	sim    Simulator     // non-nil for KindSim
	srk    *SRK
	closed bool
	// flushLeftovers: after a failed command, flush what it may have
	// left loaded (see flushLeftoversLocked).
	flushLeftovers bool
}

// Open connects to the TPM the spec selects. With Options.FlushStale, on
// swtpm, transient objects and sessions left behind by a client that died
// are flushed.
func Open(ctx context.Context, spec Spec, opts Options) (*TPM, error) {
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir()
	}
	t := &TPM{spec: spec, log: opts.Logger, timeout: opts.CommandTimeout, sem: make(chan struct{}, 1)}
	t.flushLeftovers = spec.Kind == KindDevice || spec.Kind == KindSim || opts.FlushStale
	dl := new(deadline)
	switch spec.Kind {
	case KindDevice:
		d, err := openDevice(spec.Path, opts.CommandTimeout, dl)
		if err != nil {
			return nil, err
		}
		t.raw = d
	case KindSwtpmUnix, KindSwtpmTCP:
		st := &streamTransport{network: "unix", addr: spec.Path, timeout: opts.CommandTimeout, deadline: dl}
		if spec.Kind == KindSwtpmTCP {
			st.network, st.addr = "tcp", spec.Addr
		}
		probeBy := time.Now().Add(opts.CommandTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(probeBy) {
			probeBy = d
		}
		if err := st.probe(probeBy); err != nil {
			return nil, err
		}
		t.raw = st
	case KindSim:
		open := simOpener()
		if open == nil {
			return nil, ErrNoSimulator
		}
		s, err := open(opts.StateDir)
		if err != nil {
			return nil, err
		}
		t.raw, t.sim = s, s
		t.log.Warn("using the in-process TPM simulator: an INSECURE development TPM; anyone who can read its seed file can unseal every identity",
			"seed", s.SeedPath())
	default:
		return nil, fmt.Errorf("tpmdev: invalid spec %v", spec)
	}
	var next transport.TPM = t.raw
	if opts.Wrap != nil {
		next = opts.Wrap(next)
	}
	t.guard = &guard{next: next, timeout: opts.CommandTimeout, deadline: dl, observe: opts.Observe}
	t.tpm = &retrier{next: t.guard, attempts: defaultRetries, backoff: defaultBackoff, sleep: time.Sleep}

	if opts.FlushStale && (spec.Kind == KindSwtpmUnix || spec.Kind == KindSwtpmTCP) {
		if err := t.Run(ctx, func(tpm transport.TPM) error { return t.flushStaleLocked() }); err != nil {
			t.raw.Close()
			return nil, err
		}
	}
	return t, nil
}

// Spec returns the spec the TPM was opened with.
func (t *TPM) Spec() Spec { return t.spec }

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("tpmdev: TPM is closed")

// ErrOwnerAuth means the storage root key could not be created because the
// owner hierarchy has a password; a persistent SRK at PersistentSRK, made
// by whoever knows the password, is used instead of one made here.
var ErrOwnerAuth = errors.New("tpmdev: the owner hierarchy has a password")

// Run calls fn with exclusive use of the TPM. The wait for the TPM ends
// with ctx, or after the command timeout; every command fn sends is
// bounded by the command timeout and by ctx. Errors from the wait and
// from a command that did not answer in time wrap ErrTimeout, and
// ctx.Err() when ctx ended first.
func (t *TPM) Run(ctx context.Context, fn func(tpm transport.TPM) error) error {
	start := time.Now()
	if err := t.lock(ctx); err != nil {
		return err
	}
	defer t.unlock()
	if t.closed {
		return ErrClosed
	}
	t.guard.setContext(ctx)
	defer t.guard.setContext(nil)
	if t.flushLeftovers && t.guard.takeUnsure() {
		// The wait and the cleanup share one command timeout, so that
		// on a wedged TPM a Run fails within two: that and its first
		// command's.
		t.flushLeftoversLocked(ctx, start.Add(t.timeout))
	}
	return fn(t.tpm)
}

// lock takes the TPM's lock, waiting at most until ctx ends or the command
// timeout passes: whoever holds the lock is itself bounded by its
// deadlines, so a longer wait means the TPM is wedged or badly
// overloaded, and the caller is better told than queued.
func (t *TPM) lock(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: before using the TPM: %w", ErrTimeout, context.Cause(ctx))
	}
	select {
	case t.sem <- struct{}{}:
		return nil
	default:
	}
	// The messages say nothing that varies from one wait to the next, so
	// that callers which log each distinct error once (the PCR poller)
	// do not log every failed wait.
	timer := time.NewTimer(t.timeout)
	defer timer.Stop()
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: gave up waiting for the TPM, busy with another request: %w", ErrTimeout, context.Cause(ctx))
	case <-timer.C:
		return fmt.Errorf("%w: waited %v for the TPM, busy with another request", ErrTimeout, t.timeout)
	}
}

func (t *TPM) unlock() { <-t.sem }

// flushLeftoversLocked flushes the transient objects and sessions, other
// than the SRK, that a command which timed out or lost its response may
// have left loaded: nobody knows their handles, and a TPM has room for
// only a few. Objects kept loaded across calls (an attestation key) are
// flushed too; their owners load them again. If a command is still
// pending, this fails fast and runs again at the next call. It runs only
// where every handle is ours: a kernel device (the resource manager gives
// each connection its own), the in-process simulator, or a swtpm opened
// with FlushStale. It runs on the caller's time, until by, the caller's
// deadline or cleanupTimeout, whichever comes first, so that a cleanup on
// a wedged TPM costs the caller at most that; with less than minCleanup
// left it waits for the next Run. The TPM's lock must be held.
func (t *TPM) flushLeftoversLocked(ctx context.Context, by time.Time) {
	if c := time.Now().Add(cleanupTimeout); c.Before(by) {
		by = c
	}
	if time.Until(by) < minCleanup {
		t.guard.markUnsure() // no time left: at the next Run
		return
	}
	var keep tpm2.TPMHandle
	if t.srk != nil {
		keep = t.srk.Handle
	}
	cctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	prev := t.guard.setContext(cctx)
	n, err := t.flushTransientLocked(keep)
	t.guard.setContext(prev)
	switch {
	case err != nil:
		t.log.Debug("cannot flush what a failed TPM command left loaded yet", "err", err)
	case n > 0:
		t.log.Warn("flushed handles a failed TPM command left loaded", "count", n, "tpm", t.spec.String())
	}
}

// RunWithSRK is Run with the SRK loaded. If fn fails because the SRK is no
// longer loaded (the TPM was reset, or another client flushed it), the SRK
// is loaded again and fn runs once more.
func (t *TPM) RunWithSRK(ctx context.Context, fn func(tpm transport.TPM, srk *SRK) error) error {
	return t.Run(ctx, func(tpm transport.TPM) error {
		srk, err := t.srkLocked()
		if err != nil {
			return err
		}
		err = fn(tpm, srk)
		if !IsStaleHandle(err) || t.srkLoadedLocked(srk) {
			return err // not about the SRK: another handle was stale
		}
		t.log.Warn("TPM lost the storage root key (reset or flushed by another client); loading it again", "err", err)
		t.srk = nil
		if srk, err = t.srkLocked(); err != nil {
			return err
		}
		return fn(tpm, srk)
	})
}

// srkLoadedLocked reports whether srk is still loaded at its handle. A
// stale-handle error may be about another object or session; then the SRK
// must be neither reloaded (a second copy would take an object slot) nor
// flushed. The TPM's lock must be held.
func (t *TPM) srkLoadedLocked(srk *SRK) bool {
	rsp, err := tpm2.ReadPublic{ObjectHandle: srk.Handle}.Execute(t.tpm)
	return err == nil && bytes.Equal(rsp.Name.Buffer, srk.Name.Buffer)
}

// IsStaleHandle reports whether err is the TPM saying that a handle no
// longer refers to a loaded object or session (TPM_RC_REFERENCE_H0-H2,
// TPM_RC_HANDLE): it was flushed, by us or another client, or the TPM was
// reset.
func IsStaleHandle(err error) bool {
	for _, rc := range []tpm2.TPMRC{tpm2.TPMRCReferenceH0, tpm2.TPMRCReferenceH1, tpm2.TPMRCReferenceH2, tpm2.TPMRCHandle} {
		if errors.Is(err, rc) {
			return true
		}
	}
	return false
}

// srkLocked returns the SRK, loading it the first time. The TPM's lock must be held.
func (t *TPM) srkLocked() (*SRK, error) {
	if t.srk != nil {
		return t.srk, nil
	}
	if srk, ok := t.persistentSRKLocked(); ok {
		t.srk = srk
		return srk, nil
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return nil, fmt.Errorf("tpmdev: create storage root key: %w (%w)", ErrOwnerAuth, err)
		}
		return nil, fmt.Errorf("tpmdev: create storage root key: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpmdev: storage root key: %w", err)
	}
	t.srk = &SRK{Handle: rsp.ObjectHandle, Name: rsp.Name, Public: *pub}
	return t.srk, nil
}

// persistentSRKLocked returns the SRK at PersistentSRK if one is there with
// exactly the TCG ECC P-256 template.
func (t *TPM) persistentSRKLocked() (*SRK, bool) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: PersistentSRK}.Execute(t.tpm)
	if err != nil {
		return nil, false
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil || !isSRKTemplate(pub) {
		t.log.Debug("object at 0x81000001 is not the TCG ECC P-256 SRK; creating one", "handle", "0x81000001")
		return nil, false
	}
	return &SRK{Handle: PersistentSRK, Name: rsp.Name, Public: *pub, Persistent: true}, true
}

// isSRKTemplate reports whether pub is the TCG ECC P-256 storage template,
// whatever its unique field.
func isSRKTemplate(pub *tpm2.TPMTPublic) bool {
	a, b := *pub, tpm2.ECCSRKTemplate
	a.Unique, b.Unique = tpm2.TPMUPublicID{}, tpm2.TPMUPublicID{}
	return bytes.Equal(tpm2.Marshal(a), tpm2.Marshal(b))
}

// flushStaleLocked flushes transient objects and loaded sessions that a
// client which died left behind on a TPM without a resource manager
// (swtpm). The TPM's lock must be held.
func (t *TPM) flushStaleLocked() error {
	n, err := t.flushTransientLocked(0)
	if err != nil {
		return err
	}
	if n > 0 {
		t.log.Warn("flushed handles a previous TPM client left behind", "count", n, "tpm", t.spec.String())
	}
	return nil
}

// flushTransientLocked flushes every loaded transient object and session
// but keep, and returns how many it flushed. The TPM's lock must be held.
func (t *TPM) flushTransientLocked(keep tpm2.TPMHandle) (int, error) {
	n := 0
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(first),
			PropertyCount: 64,
		}.Execute(t.tpm)
		if err != nil {
			return n, fmt.Errorf("tpmdev: list handles on %v: %w", t.spec, err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return n, fmt.Errorf("tpmdev: list handles: %w", err)
		}
		for _, h := range hs.Handle {
			if ht := h >> 24; (ht != 0x80 && ht != 0x02 && ht != 0x03) || h == keep {
				continue // never a persistent or NV handle, nor keep
			}
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tpm); err == nil {
				n++
			}
		}
	}
	return n, nil
}

// SimulateReboot power-cycles the in-process simulator: PCRs return to
// their initial values and loaded and persistent objects are gone, while
// the hierarchy seeds (so every sealed blob) survive. Only for KindSim.
func (t *TPM) SimulateReboot() error {
	if err := t.lock(context.Background()); err != nil {
		return err
	}
	defer t.unlock()
	if t.sim == nil {
		return errors.New("tpmdev: reboot is only simulated for the in-process simulator")
	}
	t.srk = nil
	return t.sim.Reboot()
}

// Close flushes the SRK if this process created it and closes the TPM. It
// waits for the TPM as Run does, at most the command timeout.
func (t *TPM) Close() error {
	if err := t.lock(context.Background()); err != nil {
		return err
	}
	defer t.unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.srk != nil && !t.srk.Persistent {
		tpm2.FlushContext{FlushHandle: t.srk.Handle}.Execute(t.tpm)
		t.srk = nil
	}
	// A command abandoned at its deadline may still be running in the
	// transport. Closing under it would race with it (the in-process
	// simulator is plain memory): wait for it, as long as a command may
	// take, and leave an unfinished one's transport open.
	if !t.guard.waitIdle(t.guard.timeout) {
		return fmt.Errorf("%w: a command is still running; the TPM connection is left open", ErrTimeout)
	}
	return t.raw.Close()
}
