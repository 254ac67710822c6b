package agentsrv

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/agent"
)

// A warm signature allocates only the signature: one object holding the
// ssh.Signature and its blob.
func TestWarmSignAllocations(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	ts := startServer(t, Config{Unsealer: f, AutoLockTimeout: time.Hour}, Identity{Blob: k.blob})
	mustSign(t, ts.dial(t), k.pub, []byte("warm up"))
	e := ts.sealedEntry(t, "id")
	data := make([]byte, 300)
	now := ts.wallNow()
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := e.trySign(now, data, 0); !ok {
			t.Fatal("trySign missed a cached seed")
		}
	})
	if allocs != 1 {
		t.Errorf("warm signature: %v allocations, want 1", allocs)
	}

	// The whole request path, from the public key blob to the signature,
	// with logging at Info as in production.
	c := &conn{s: ts.Server, ctx: context.Background(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	key := &agent.Key{Format: k.pub.Type(), Blob: k.pub.Marshal()}
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := c.SignWithFlags(key, data, 0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 1 {
		t.Errorf("warm SignWithFlags: %v allocations, want 1", allocs)
	}
}
