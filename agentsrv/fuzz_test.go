package agentsrv

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/agent"
)

// FuzzServeRequest feeds arbitrary bytes, read as a stream of
// length-prefixed agent requests, to a connection of a fresh server with a
// sealed identity, then checks that the server still serves another
// connection. The seed corpus in testdata/fuzz/FuzzServeRequest holds
// well-formed requests of every kind (list, sign, add, remove, lock and
// unlock, extensions), garbage, and an oversized length.
func FuzzServeRequest(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 11})
	f.Fuzz(func(t *testing.T, stream []byte) {
		u := newFakeUnsealer()
		k := newTestKey(t, u, "id", "comment")
		s := New(Config{
			Unsealer:        u,
			Logger:          testLogger(t),
			AutoLockTimeout: time.Hour,
			Sleep:           func(context.Context, time.Duration) {},
		})
		defer s.Close()
		if err := s.SetIdentities([]Identity{{Blob: k.blob}}); err != nil {
			t.Fatal(err)
		}

		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { s.ServeConn(context.Background(), server); close(done) }()
		go io.Copy(io.Discard, client)
		client.Write(stream) // returns once the server has read it all, or hung up
		client.Close()
		<-done

		// Another connection is served normally.
		client, server = net.Pipe()
		defer client.Close()
		go s.ServeConn(context.Background(), server)
		if _, err := agent.NewClient(client).List(); err != nil {
			t.Fatalf("second connection: List: %v", err)
		}
	})
}
