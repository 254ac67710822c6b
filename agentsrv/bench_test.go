package agentsrv

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// The two benchmarks below sign the same Ed25519 key, warm, through a
// unix socket with x/crypto's agent client: one against this server, one
// against x/crypto's in-memory keyring served by agent.ServeAgent. Their
// figures are directly comparable.

const benchDataSize = 256 // about the size of SSH user authentication data

func BenchmarkSignSocket(b *testing.B) {
	u := newFakeUnsealer()
	k := newTestKey(b, u, "id", "")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ts := startServer(b, Config{Unsealer: u, Logger: quiet, AutoLockTimeout: time.Hour}, Identity{Blob: k.blob})
	for _, conns := range []int{1, 8} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			benchSign(b, ts.path, k.pub, conns)
		})
	}
	if n := u.calls.Load(); n != 1 {
		b.Errorf("Unseal called %d times, want 1", n)
	}
}

func BenchmarkKeyringSocket(b *testing.B) {
	k := newTestKey(b, nil, "id", "")
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: k.priv}); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(socketDir(b), "keyring")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(keyring, c); c.Close() }()
		}
	}()
	for _, conns := range []int{1, 8} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			benchSign(b, path, k.pub, conns)
		})
	}
}

// benchSign runs b.N signatures of key, spread over conns connections
// to the agent at path, each used by its own goroutine.
func benchSign(b *testing.B, path string, key ssh.PublicKey, conns int) {
	clients := make([]agent.ExtendedAgent, conns)
	for i := range clients {
		c, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = agent.NewClient(c)
		// Warm up: the first signature unseals.
		if _, err := clients[i].Sign(key, make([]byte, benchDataSize)); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var failed atomic.Value
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			data := make([]byte, benchDataSize)
			for next.Add(1) <= int64(b.N) {
				if _, err := c.Sign(key, data); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}
