package agentsrv

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmfault"
	"github.com/icn/icn-agent/internal/tpmtrace"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// simTPM is an Unsealer as the daemon builds it (tpmseal.Unseal on a
// tpmdev.TPM), on the in-process simulator, with a fault injector and a
// counter of the commands that reach the TPM:
//
//	sealstore ── retrier ── guard ── Injector ── reached ── simulator
//
// The simulator is one per process: tests using it never run in
// parallel.
type simTPM struct {
	tpm     *tpmdev.TPM
	inj     *tpmfault.Injector
	reached *tpmtrace.Counter
}

func newSimTPM(t testing.TB, commandTimeout time.Duration) *simTPM {
	t.Helper()
	s := &simTPM{inj: tpmfault.New()}
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{
		StateDir:       t.TempDir(),
		CommandTimeout: commandTimeout,
		Wrap: func(next transport.TPM) transport.TPM {
			s.reached = tpmtrace.NewCounter(next)
			return s.inj.Wrap(s.reached)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.tpm = tpm
	t.Cleanup(func() {
		s.inj.Restore()
		s.inj.Release()
		tpm.Close()
	})
	return s
}

// Unseal unseals with sealstore, as the daemon's unsealer does.
func (s *simTPM) Unseal(ctx context.Context, b *sealstore.Blob, dst []byte) error {
	return tpmseal.Unseal(ctx, s.tpm, b, dst)
}

// seal seals a fresh random identity called name.
func (s *simTPM) seal(t testing.TB, name string) Identity {
	t.Helper()
	seed := make([]byte, sealstore.SeedSize)
	rand.Read(seed)
	b, err := tpmseal.Seal(context.Background(), s.tpm, seed, tpmseal.SealOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return Identity{Blob: b}
}

// countingUnsealer counts the unseals of each identity.
type countingUnsealer struct {
	next Unsealer

	mu     sync.Mutex
	counts map[string]int
}

func newCountingUnsealer(next Unsealer) *countingUnsealer {
	return &countingUnsealer{next: next, counts: map[string]int{}}
}

func (c *countingUnsealer) Unseal(ctx context.Context, b *sealstore.Blob, dst []byte) error {
	c.mu.Lock()
	c.counts[b.Name]++
	c.mu.Unlock()
	return c.next.Unseal(ctx, b, dst)
}

func (c *countingUnsealer) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}
