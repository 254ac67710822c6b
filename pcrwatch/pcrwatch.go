// Package pcrwatch notices when the TPM's platform configuration registers
// (PCRs) move, so that icn-agent can react before a signature request fails.
//
// # Why watch PCRs
//
// Every icn-agent identity is sealed to a TPM2_PolicyPCR policy: the TPM
// releases the identity's seed only while the selected PCRs hold the values
// they had when the identity was sealed (see package sealstore). PCRs are
// only ever extended — new = H(old || measurement) — until the next TPM
// reset, so as soon as something measured into a policy PCR changes (a
// firmware, boot loader or kernel update, the Secure Boot state, or anyone
// running tpm2_pcrextend), the identities bound to that PCR stop unsealing
// until they are resealed.
//
// The agent may still hold seeds it unsealed earlier. When a PCR moves it
// drops those cached seeds, so that it never signs with a key the TPM would
// no longer release, and tells the user which PCR moved and from what to
// what, instead of failing obscurely at the next unseal. This package
// provides the signal: a [Watcher] that polls the PCRs the identities'
// policies select and reports each change once.
//
// # What it reads
//
// Only PCR values of the SHA-256 bank, with TPM2_PCR_Read. It never sees a
// key, a blob or a seed; PCR values are public. A TPM returns at most eight
// PCRs per TPM2_PCR_Read, so watching the usual handful of PCRs costs one
// command per poll and watching all 24 three. The default interval is 30 s
// ([DefaultInterval]); [Watcher.Poke] asks for a poll at once, for example
// when an unseal has just failed with TPM_RC_POLICY_FAIL or on SIGHUP.
//
// # Semantics
//
// The first value read for a PCR is its baseline and is not a change; so is
// the first value read after [Watcher.SetPCRs] adds a PCR. After that, every
// poll compares each PCR with the value last read and reports the ones that
// differ, in one batch per poll on [Watcher.Changes]. Reading the same value
// again reports nothing. A batch the consumer has not yet received is
// merged with later ones (each PCR keeping its oldest Old and newest New,
// and dropped if it is back where it started), so the watcher never blocks
// on a slow consumer and never reports a change twice. Read errors are
// logged once per distinct error and polling goes on; a TPM that is briefly
// unavailable only delays the report.
//
// # Sharing the TPM
//
// The TPM runs one command at a time, and the agent's signature requests
// wait for it too. Each poll therefore has a deadline of its own
// ([Watcher.SetTimeout]; by default [DefaultTimeout] or the interval,
// whichever is shorter), which covers the wait for the TPM and the read:
// on a wedged TPM a poll gives up by then and releases the TPM, rather
// than holding it, and the requests queued behind it, until the TPM
// answers.
package pcrwatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// DefaultInterval is the polling interval New uses when given none.
const DefaultInterval = 30 * time.Second

// DefaultTimeout bounds one poll (waiting for the TPM and reading it)
// unless SetTimeout says otherwise; a shorter interval bounds it too.
// Reading a few PCRs takes milliseconds even on a slow chip.
const DefaultTimeout = 5 * time.Second

// bank is the only PCR bank icn-agent policies use.
const bank = tpm2.TPMAlgSHA256

// Reader reads PCR values. ReadPCRs returns the values of the given PCRs of
// one bank, in the order of indexes, which are ascending and unique.
// [TPMReader] adapts a [TPM]; tests use fakes.
type Reader interface {
	ReadPCRs(ctx context.Context, bank tpm2.TPMIAlgHash, indexes []int) ([][]byte, error)
}

// TPM is what TPMReader needs of a TPM: exclusive use of its transport
// for the duration of fn, ending with ctx. icn-agent's tpmdev.TPM
// implements it; so can any program that owns a go-tpm transport.
type TPM interface {
	Run(ctx context.Context, fn func(tpm transport.TPM) error) error
}

var _ TPM = (*tpmdev.TPM)(nil)

// TPMReader returns a Reader that reads the PCRs of t (several
// TPM2_PCR_Read commands if needed, all from one state of the PCR update
// counter), holding t for the duration of one read.
func TPMReader(t TPM) Reader {
	return tpmReader{t}
}

type tpmReader struct {
	tpm TPM
}

func (r tpmReader) ReadPCRs(ctx context.Context, bank tpm2.TPMIAlgHash, indexes []int) ([][]byte, error) {
	var values [][]byte
	err := r.tpm.Run(ctx, func(tpm transport.TPM) error {
		var err error
		values, _, err = tpmdev.ReadPCRs(tpm, bank, indexes)
		return err
	})
	return values, err
}

// Change is one PCR whose value moved between two polls.
type Change struct {
	// PCR is the PCR index, 0 to 23.
	PCR int
	// Old is the value before (the baseline or the previous reading) and
	// New the value read now, both SHA-256 bank values (32 bytes).
	Old, New []byte
}

// Watcher polls a set of PCRs and reports when their values change. Create
// it with New, choose the PCRs with SetPCRs, and call Run. Its methods are
// safe for concurrent use.
type Watcher struct {
	r        Reader
	interval time.Duration
	log      *slog.Logger
	changes  chan []Change
	poke     chan struct{}
	running  atomic.Bool
	timeout  atomic.Int64 // time.Duration bounding one poll

	mu      sync.Mutex
	pcrs    []int          // the PCRs to watch: ascending, unique, 0 to 23
	current map[int][]byte // last value read of each watched PCR
}

// New returns a Watcher that reads PCRs with r every interval
// (DefaultInterval if interval <= 0) and logs to log (slog.Default() if
// nil). It watches no PCR until SetPCRs is called.
func New(r Reader, interval time.Duration, log *slog.Logger) *Watcher {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{
		r:        r,
		interval: interval,
		log:      log,
		changes:  make(chan []Change),
		poke:     make(chan struct{}, 1),
		current:  make(map[int][]byte),
	}
	w.SetTimeout(DefaultTimeout)
	return w
}

// SetTimeout bounds each poll, the wait for the TPM included, by d, or by
// the interval if that is shorter; d <= 0 restores DefaultTimeout. It is
// safe to call while Run is running; it applies from the next poll.
func (w *Watcher) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultTimeout
	}
	w.timeout.Store(int64(min(d, w.interval)))
}

// SetPCRs sets the PCRs to watch, typically the union of every identity's
// policy PCRs; order and duplicates do not matter, and indexes outside 0 to
// 23 are logged and ignored. It is safe to call while Run is running: PCRs
// no longer in the set are forgotten (Current stops listing them), and
// newly added ones get a baseline at the poll SetPCRs triggers, without a
// change being reported.
func (w *Watcher) SetPCRs(pcrs []int) {
	set := make([]int, 0, len(pcrs))
	for _, p := range pcrs {
		if p < 0 || p >= tpmdev.NumPCRs {
			w.log.Warn("pcrwatch: ignoring PCR index out of range", "pcr", p)
			continue
		}
		set = append(set, p)
	}
	slices.Sort(set)
	set = slices.Compact(set)

	w.mu.Lock()
	w.pcrs = set
	for p := range w.current {
		if _, ok := slices.BinarySearch(set, p); !ok {
			delete(w.current, p)
		}
	}
	w.mu.Unlock()
	w.log.Debug("pcrwatch: watching PCRs", "pcrs", set)
	w.Poke()
}

// Poke asks Run to poll now. It does not block; pokes made while a poll is
// already pending are merged into it.
func (w *Watcher) Poke() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Changes returns the channel on which Run sends the PCRs that changed, one
// batch per poll that found changes, sorted by PCR. Run closes it when it
// returns.
func (w *Watcher) Changes() <-chan []Change {
	return w.changes
}

// Current returns the last value read of every watched PCR that has been
// read at least once. The map and its values are copies.
func (w *Watcher) Current() map[int][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[int][]byte, len(w.current))
	for p, v := range w.current {
		out[p] = bytes.Clone(v)
	}
	return out
}

// Run polls the PCRs at once, then every interval and whenever Poke or
// SetPCRs asks, until ctx ends; it then closes the Changes channel and
// returns nil. Read errors are logged, once per distinct error, and polling
// continues. Run may be called only once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("pcrwatch: Run called more than once")
	}
	defer close(w.changes)

	ticker := time.NewTicker(w.interval)
	defer ticker.Stop()

	var (
		pending []Change // found but not yet received by the consumer
		lastErr string   // the read error last logged, "" after a success
	)
	poll := func() {
		batch, err := w.poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return // shutting down: not worth a warning
			}
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				w.log.Warn("pcrwatch: cannot read PCRs; will keep trying", "err", err, "interval", w.interval)
			}
			return
		}
		if lastErr != "" {
			lastErr = ""
			w.log.Info("pcrwatch: reading PCRs works again")
		}
		for _, c := range batch {
			w.log.Warn("pcrwatch: PCR changed; identities sealed to its old value will no longer unseal",
				"pcr", c.PCR, "bank", "sha256", "old", hex.EncodeToString(c.Old), "new", hex.EncodeToString(c.New))
		}
		pending = merge(pending, batch)
	}

	poll()
	for {
		var out chan<- []Change
		if len(pending) > 0 {
			out = w.changes
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			poll()
		case <-w.poke:
			poll()
		case out <- pending:
			pending = nil
		}
	}
}

// poll reads the watched PCRs once, records the values and returns the
// PCRs whose value differs from the one recorded before.
func (w *Watcher) poll(ctx context.Context) ([]Change, error) {
	w.mu.Lock()
	pcrs := slices.Clone(w.pcrs)
	w.mu.Unlock()
	if len(pcrs) == 0 {
		return nil, nil
	}

	ctx, cancel := context.WithTimeout(ctx, time.Duration(w.timeout.Load()))
	defer cancel()
	values, err := w.r.ReadPCRs(ctx, bank, pcrs)
	if err != nil {
		return nil, fmt.Errorf("pcrwatch: read PCRs %v: %w", pcrs, err)
	}
	if len(values) != len(pcrs) {
		return nil, fmt.Errorf("pcrwatch: read PCRs %v: got %d values", pcrs, len(values))
	}
	for i, v := range values {
		if len(v) != sha256.Size {
			return nil, fmt.Errorf("pcrwatch: read PCR %d: %d-byte value, want %d for SHA-256", pcrs[i], len(v), sha256.Size)
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	var changes []Change
	for i, p := range pcrs {
		if _, still := slices.BinarySearch(w.pcrs, p); !still {
			continue // removed by SetPCRs during the read
		}
		v := bytes.Clone(values[i])
		old, seen := w.current[p]
		w.current[p] = v
		if seen && !bytes.Equal(old, v) {
			changes = append(changes, Change{PCR: p, Old: old, New: v})
		}
	}
	return changes, nil
}

// merge adds the changes of batch to pending, which the consumer has not
// received yet: a PCR in both keeps pending's Old and takes batch's New, and
// a PCR that is back to its old value is dropped. The result is sorted by
// PCR.
func merge(pending, batch []Change) []Change {
	for _, c := range batch {
		i := slices.IndexFunc(pending, func(p Change) bool { return p.PCR == c.PCR })
		if i < 0 {
			pending = append(pending, c)
			continue
		}
		pending[i].New = c.New
	}
	pending = slices.DeleteFunc(pending, func(c Change) bool { return bytes.Equal(c.Old, c.New) })
	slices.SortFunc(pending, func(a, b Change) int { return a.PCR - b.PCR })
	if len(pending) == 0 {
		return nil
	}
	return pending
}
