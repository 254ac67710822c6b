package unlock

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// DARefresh is how often a DACache reads the TPM's dictionary-attack
// state on its own. Only failed authorizations move the counter up (the
// agent's own PIN unseals Poke it to read at once); it goes down by one
// per recovery interval, minutes on most TPMs.
const DARefresh = time.Minute

// ErrDAUnknown means the dictionary-attack state has not been read yet.
var ErrDAUnknown = errors.New("dictionary-attack state not read yet")

// DACache keeps the TPM's dictionary-attack state for status and metrics.
// A status request must answer at once, whatever the TPM is doing: it
// reads this cache, which Run refreshes in the background, every DARefresh
// and after each Poke.
type DACache struct {
	tpm  tpmseal.TPM
	log  *slog.Logger
	poke chan struct{}

	mu      sync.Mutex
	st      tpmdev.DAState
	known   bool
	lastErr string // the refresh error last logged, "" after a success
}

// NewDACache returns a cache of tpm's dictionary-attack state; log (nil
// discards) receives failed reads.
func NewDACache(tpm tpmseal.TPM, log *slog.Logger) *DACache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DACache{tpm: tpm, log: log, poke: make(chan struct{}, 1)}
}

// Lockout returns the last counter and threshold read; it never touches
// the TPM. It is agentsrv.Config.Lockout.
func (c *DACache) Lockout(context.Context) (counter, max uint32, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		return 0, 0, ErrDAUnknown
	}
	return c.st.Counter, c.st.MaxTries, nil
}

// Poke asks Run to read the state now. It does not block.
func (c *DACache) Poke() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// Run reads the state at once, then every DARefresh and after each Poke,
// until ctx ends. A failed read keeps the last values and is logged once
// per distinct error.
func (c *DACache) Run(ctx context.Context) error {
	t := time.NewTicker(DARefresh)
	defer t.Stop()
	for {
		c.refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.poke:
		}
	}
}

func (c *DACache) refresh(ctx context.Context) {
	st, err := ReadDA(ctx, c.tpm)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if msg := err.Error(); msg != c.lastErr && ctx.Err() == nil {
			c.lastErr = msg
			c.log.Warn("cannot read the TPM's dictionary-attack counter; status shows the last value read", "err", err)
		}
		return
	}
	c.st, c.known, c.lastErr = st, true, ""
}
