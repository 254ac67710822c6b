package agentsrv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"github.com/icn/icn-agent/internal/didkey"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv/client"
)

func TestClient(t *testing.T) {
	f := newFakeUnsealer()
	alice := newTestKey(t, f, "alice", "alice@laptop")
	cert := newCert(t, alice.pub)
	clock := newFakeClock()
	ts := startServer(t, Config{Unsealer: f, AutoLockTimeout: time.Hour, Now: clock.Now}, Identity{Blob: alice.blob, Cert: cert})

	t.Setenv("SSH_AUTH_SOCK", ts.path)
	c, err := client.Dial("")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	_, softPriv, _ := ed25519.GenerateKey(rand.Reader)
	if err := ts.dial(t).Add(agent.AddedKey{PrivateKey: softPriv, Comment: "soft"}); err != nil {
		t.Fatal(err)
	}
	ids, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	softPub := softPriv.Public().(ed25519.PublicKey)
	alicePub := alice.priv.Public().(ed25519.PublicKey)
	want := []client.Identity{
		{Comment: "alice@laptop", Name: "alice", DIDKey: didkey.Encode(alicePub), HardwareBacked: true, Backend: client.BackendTPM},
		{Comment: "alice@laptop", Name: "alice", DIDKey: didkey.Encode(alicePub), HardwareBacked: true, Backend: client.BackendTPM},
		{Comment: "soft", DIDKey: didkey.Encode(softPub), Backend: client.BackendSoftware},
	}
	if len(ids) != len(want) {
		t.Fatalf("List = %+v", ids)
	}
	for i, w := range want {
		got := ids[i]
		got.Key = nil
		if got != w {
			t.Errorf("identity %d = %+v, want %+v", i, got, w)
		}
	}
	if _, ok := ids[1].Key.(*ssh.Certificate); !ok {
		t.Errorf("identity 1 is a %T, want the certificate", ids[1].Key)
	}

	sig, err := c.Sign(ids[0].Key, []byte("data"))
	if err != nil || alice.pub.Verify([]byte("data"), sig) != nil {
		t.Fatalf("Sign: %v", err)
	}

	// Add = unseal now, with a lifetime rounded up to seconds.
	ts.DropAll()
	if err := c.Add("alice", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	is := st.Identities[0]
	if !is.Unsealed || is.UnsealCount != 2 || !is.Expiry.Equal(clock.Now().Add(2*time.Second)) {
		t.Errorf("status after Add = %+v", is)
	}
	if is.Certificate == nil || string(is.Certificate.Marshal()) != string(cert.Marshal()) {
		t.Error("status lost the certificate")
	}
	if st.SoftwareKeys != 1 || st.Locked {
		t.Errorf("status = %+v", st)
	}

	// Failures come back with the reason.
	if err := c.Add("bob", 0); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Add(unknown) = %v, want ErrNotFound", err)
	}
	f.setFail(errors.New("TPM on fire"))
	ts.DropAll()
	if err := c.Add("alice", 0); err == nil || !strings.Contains(err.Error(), "TPM on fire") {
		t.Errorf("Add with a failing TPM = %v, want the TPM's error", err)
	}
	if err := c.Add("alice", -time.Second); err == nil {
		t.Error("Add with a negative lifetime succeeded")
	}
}

// ServeConn on a context that ends closes the connection.
func TestServeConnContext(t *testing.T) {
	s := New(Config{Unsealer: newFakeUnsealer(), Logger: testLogger(t)})
	defer s.Close()
	client, server := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.ServeConn(ctx, server); close(done) }()
	if _, err := agent.NewClient(client).List(); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if _, err := agent.NewClient(client).List(); err == nil {
		t.Error("connection still served after its context ended")
	}
}

// The TPM's dictionary-attack counter reaches clients of the status
// extension (version 2); an agent without it says nothing about it.
func TestStatusLockout(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "work", "")
	for _, tt := range []struct {
		name    string
		lockout func(context.Context) (uint32, uint32, error)
		want    *LockoutStatus
	}{
		{"known", func(context.Context) (uint32, uint32, error) { return 2, 32, nil }, &LockoutStatus{Counter: 2, Max: 32}},
		{"failing", func(context.Context) (uint32, uint32, error) { return 0, 0, errors.New("tpm gone") }, nil},
		{"not configured", nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Config{Unsealer: f, Lockout: tt.lockout}, Identity{Blob: k.blob})
			c, err := client.Dial(ts.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st, err := c.Status()
			if err != nil {
				t.Fatal(err)
			}
			if (st.Lockout == nil) != (tt.want == nil) || (st.Lockout != nil && *st.Lockout != *tt.want) {
				t.Fatalf("lockout = %+v; want %+v", st.Lockout, tt.want)
			}
		})
	}
}
