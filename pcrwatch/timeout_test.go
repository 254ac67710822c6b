package pcrwatch

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// hungReader is a TPM that never answers: each read returns only when its
// context ends, and reports how long it was held.
type hungReader struct {
	held chan time.Duration
}

func (h *hungReader) ReadPCRs(ctx context.Context, _ tpm2.TPMIAlgHash, _ []int) ([][]byte, error) {
	start := time.Now()
	<-ctx.Done()
	h.held <- time.Since(start)
	return nil, ctx.Err()
}

// A poll on a TPM that does not answer gives up at its own deadline, not
// the agent's: it must not hold the TPM, and the requests waiting for it,
// until the TPM comes back. Polling then goes on.
func TestPollHasItsOwnDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hungReader{held: make(chan time.Duration, 10)}
		w := New(h, time.Hour, slog.New(slog.DiscardHandler))
		w.SetTimeout(2 * time.Second)
		w.SetPCRs([]int{7})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()

		if d := <-h.held; d != 2*time.Second {
			t.Errorf("first poll held the TPM %v; want its 2s deadline", d)
		}
		w.Poke()
		if d := <-h.held; d != 2*time.Second {
			t.Errorf("poll after Poke held the TPM %v; want 2s", d)
		}
		// The interval bounds a poll too.
		w2 := New(h, 500*time.Millisecond, slog.New(slog.DiscardHandler))
		w2.SetTimeout(time.Minute)
		if got := time.Duration(w2.timeout.Load()); got != 500*time.Millisecond {
			t.Errorf("timeout with a 500ms interval = %v; want 500ms", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
