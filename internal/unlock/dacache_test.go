package unlock

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// countingTPM is a tpmseal.TPM that counts its uses and fails them all.
type countingTPM struct{ n atomic.Int32 }

func (c *countingTPM) RunWithSRK(context.Context, func(transport.TPM, *tpmdev.SRK) error) error {
	c.n.Add(1)
	return errors.New("no TPM")
}

// The cache reads at once, then every DARefresh and on each Poke; until a
// read succeeds it reports ErrDAUnknown, and a failure is logged once.
func TestDACacheSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tpm := &countingTPM{}
		var logs bytes.Buffer
		c := NewDACache(tpm, slog.New(slog.NewTextHandler(&logs, nil)))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		synctest.Wait()
		if n := tpm.n.Load(); n != 1 {
			t.Fatalf("%d reads at start, want 1", n)
		}
		if _, _, err := c.Lockout(ctx); !errors.Is(err, ErrDAUnknown) {
			t.Fatalf("Lockout before any read: %v, want ErrDAUnknown", err)
		}
		c.Poke()
		synctest.Wait()
		if n := tpm.n.Load(); n != 2 {
			t.Fatalf("%d reads after a poke, want 2", n)
		}
		time.Sleep(DARefresh - time.Nanosecond)
		synctest.Wait()
		if n := tpm.n.Load(); n != 2 {
			t.Fatalf("%d reads before DARefresh passed, want 2", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := tpm.n.Load(); n != 3 {
			t.Fatalf("%d reads once DARefresh passed, want 3", n)
		}
		if got := strings.Count(logs.String(), "cannot read the TPM's dictionary-attack counter"); got != 1 {
			t.Fatalf("the same failure logged %d times, want once:\n%s", got, logs.String())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// With a TPM, Lockout serves what was read, without touching the TPM.
func TestDACacheReads(t *testing.T) {
	tpm := openTestTPM(t, "sim")
	c := NewDACache(tpm, nil)
	c.refresh(t.Context())
	counter, max, err := c.Lockout(t.Context())
	if err != nil || counter != 0 || max == 0 {
		t.Fatalf("Lockout = %d, %d, %v; want 0 and a threshold", counter, max, err)
	}
}
