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

// releaseHung lets the commands hanging in the injector go on to the TPM
// and waits until they have returned, at most 30 s. While one hangs,
// tpmdev's guard sends no other command, so the first to return is the
// one released.
func (s *simTPM) releaseHung(t testing.TB) {
	t.Helper()
	select {
	case <-s.answered:
	default:
	}
	s.inj.Release()
	select {
	case <-s.answered:
	case <-time.After(30 * time.Second):
		t.Fatal("the released command never returned")
	}
}

func newSimTPM(t testing.TB, commandTimeout time.Duration) *simTPM {
	t.Helper()
	s := &simTPM{inj: tpmfault.New(), answered: make(chan struct{}, 1)}
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{
		StateDir:       t.TempDir(),
		CommandTimeout: commandTimeout,
		Wrap: func(next transport.TPM) transport.TPM {
			s.reached = tpmtrace.NewCounter(next)
			return answers{next: s.inj.Wrap(s.reached), answered: s.answered}
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
