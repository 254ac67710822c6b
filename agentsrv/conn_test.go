package agentsrv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// frame prefixes a request body with its length.
func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// roundTrip writes one request and reads its reply body.
func roundTrip(t testing.TB, c net.Conn, body []byte) []byte {
	t.Helper()
	if _, err := c.Write(frame(body)); err != nil {
		t.Fatalf("write: %v", err)
	}
	return readReply(t, c)
}

func readReply(t testing.TB, c net.Conn) []byte {
	t.Helper()
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	reply := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return reply
}

// pipeConn serves one end of a net.Pipe with s and returns the other,
// and a channel closed when ServeConn returns.
func pipeConn(t testing.TB, s *Server) (net.Conn, <-chan struct{}) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { s.ServeConn(context.Background(), server); close(done) }()
	t.Cleanup(func() { client.Close() })
	return client, done
}

// onlyConn returns the server's only connection. The connection's
// goroutine must be waiting for a request (the test has read the reply
// to its last one), so that its buffer can be read.
func (s *Server) onlyConn(t testing.TB) *conn {
	t.Helper()
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if len(s.conns) != 1 {
		t.Fatalf("%d connections, want 1", len(s.conns))
	}
	for c := range s.conns {
		return c
	}
	return nil
}

func edAddRequest(typ byte, pub, priv []byte, comment string, constraints ...byte) []byte {
	body := ssh.Marshal(struct {
		Type    byte
		KeyType string
		Pub     []byte
		Priv    []byte
		Comment string
	}{typ, ssh.KeyAlgoED25519, pub, priv, comment})
	return append(body, constraints...)
}

// No secret outlives its request in the connection's buffer, and the
// buffer is destroyed with the connection.
func TestRequestBufferIsWiped(t *testing.T) {
	s := New(Config{Unsealer: newFakeUnsealer(), Logger: testLogger(t), Sleep: func(context.Context, time.Duration) {}})
	defer s.Close()
	c, done := pipeConn(t, s)

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pass := []byte("correct horse battery staple")
	steps := []struct {
		name   string
		body   []byte
		secret []byte
		reply  byte
	}{
		{"add", edAddRequest(msgAddIdentity, pub, priv, "soft"), priv.Seed(), msgSuccess},
		{"lock", ssh.Marshal(struct {
			Type byte
			Pass []byte
		}{msgLock, pass}), pass, msgSuccess},
		{"wrong unlock", ssh.Marshal(struct {
			Type byte
			Pass []byte
		}{msgUnlock, []byte("tr0ub4dor&3")}), []byte("tr0ub4dor&3"), msgFailure},
		{"unlock", ssh.Marshal(struct {
			Type byte
			Pass []byte
		}{msgUnlock, pass}), pass, msgSuccess},
		{"large extension", ssh.Marshal(struct {
			Type     byte
			Name     string
			Contents []byte `ssh:"rest"`
		}{msgExtension, "pin@example.com", bytes.Repeat([]byte("pin!"), 10000)}), []byte("pin!"), msgFailure},
	}
	for _, st := range steps {
		if reply := roundTrip(t, c, st.body); len(reply) != 1 || reply[0] != st.reply {
			t.Fatalf("%s: reply %v, want [%d]", st.name, reply, st.reply)
		}
		pc := s.onlyConn(t)
		b := pc.buf.Bytes()
		if len(b) != reqBufSize {
			t.Errorf("%s: request buffer of %d bytes after the request, want %d", st.name, len(b), reqBufSize)
		}
		if !pc.buf.Locked() {
			t.Logf("%s: request buffer not locked (RLIMIT_MEMLOCK)", st.name)
		}
		if bytes.Contains(b, st.secret) || !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("%s: request buffer not wiped", st.name)
		}
	}
	pc := s.onlyConn(t)
	c.Close()
	<-done
	if pc.buf != nil {
		t.Error("request buffer not destroyed with the connection")
	}
}

// A client may send its next requests before reading the replies.
func TestPipelinedRequests(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	s := New(Config{Unsealer: f, Logger: testLogger(t)})
	defer s.Close()
	if err := s.SetIdentities([]Identity{{Blob: k.blob}}); err != nil {
		t.Fatal(err)
	}
	c, _ := pipeConn(t, s)
	sign := ssh.Marshal(struct {
		Type  byte
		Key   []byte
		Data  []byte
		Flags uint32
	}{msgSignRequest, k.pub.Marshal(), []byte("data"), 0})
	var stream []byte
	for range 3 {
		stream = append(stream, frame(sign)...)
		stream = append(stream, frame([]byte{msgRequestIdentities})...)
	}
	go c.Write(stream)
	for i := range 3 {
		reply := readReply(t, c)
		var resp struct {
			Type byte
			Sig  []byte
		}
		var sig ssh.Signature
		if err := ssh.Unmarshal(reply, &resp); err != nil || resp.Type != msgSignResponse || ssh.Unmarshal(resp.Sig, &sig) != nil {
			t.Fatalf("request %d: sign reply %x", i, reply)
		}
		if err := k.pub.Verify([]byte("data"), &sig); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if reply := readReply(t, c); reply[0] != msgIdentitiesAnswer {
			t.Fatalf("request %d: list reply %x", i, reply)
		}
	}
}

// An Ed25519 key whose public half is not its seed's is refused.
func TestAddMismatchedEd25519Key(t *testing.T) {
	s := New(Config{Unsealer: newFakeUnsealer(), Logger: testLogger(t)})
	defer s.Close()
	c, _ := pipeConn(t, s)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	forged := append(bytes.Clone(priv.Seed()), otherPub...)
	for _, tc := range []struct {
		name      string
		pub, priv []byte
	}{
		{"public key of another seed", otherPub, forged},
		{"public field differs from the private key's", otherPub, priv},
	} {
		body := edAddRequest(msgAddIdentity, tc.pub, tc.priv, "forged")
		req, err := parseRequest(body)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.addParsed(&req.add); !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("%s: addParsed: %v, want ErrKeyMismatch", tc.name, err)
		}
		if reply := roundTrip(t, c, body); !bytes.Equal(reply, []byte{msgFailure}) {
			t.Errorf("%s: reply %v, want SSH_AGENT_FAILURE", tc.name, reply)
		}
	}
	if n := s.Status().SoftwareKeys; n != 0 {
		t.Errorf("%d software keys after refused adds", n)
	}
}

// The request loop answers a warm signature without allocating: the
// request is parsed in place and the reply built in the connection's
// buffers.
func TestWarmSignRequestAllocatesNothing(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	ts := startServer(t, Config{Unsealer: f, AutoLockTimeout: time.Hour}, Identity{Blob: k.blob})
	mustSign(t, ts.dial(t), k.pub, []byte("warm up"))
	c := &conn{s: ts.Server, ctx: context.Background(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	body := ssh.Marshal(struct {
		Type  byte
		Key   []byte
		Data  []byte
		Flags uint32
	}{msgSignRequest, k.pub.Marshal(), make([]byte, benchDataSize), 0})
	out := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		out = c.handle(out[:0], body)
		if out[0] != msgSignResponse {
			t.Fatalf("reply %x", out)
		}
	})
	if allocs != 0 {
		t.Errorf("warm sign request: %v allocations, want 0", allocs)
	}
}

// A connection holding a partial request is closed after RequestTimeout;
// one idle between requests is not.
func TestPartialRequestTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(Config{Unsealer: newFakeUnsealer(), Logger: testLogger(t), RequestTimeout: 5 * time.Second})
		defer s.Close()
		client, server := net.Pipe()
		defer client.Close()
		done := make(chan struct{})
		go func() { s.ServeConn(context.Background(), server); close(done) }()
		closed := func() bool {
			synctest.Wait()
			select {
			case <-done:
				return true
			default:
				return false
			}
		}

		if reply := roundTrip(t, client, []byte{msgRequestIdentities}); reply[0] != msgIdentitiesAnswer {
			t.Fatalf("reply %x", reply)
		}
		time.Sleep(time.Hour)
		if closed() {
			t.Fatal("a connection idle between requests was closed")
		}
		client.Write([]byte{0, 0}) // half a header
		time.Sleep(5*time.Second - time.Millisecond)
		if closed() {
			t.Fatal("closed before the request timeout")
		}
		time.Sleep(time.Millisecond)
		if !closed() {
			t.Fatal("a connection holding half a header was not closed after the request timeout")
		}

		// A request that completes in time clears the deadline.
		client, server = net.Pipe()
		defer client.Close()
		done = make(chan struct{})
		go func() { s.ServeConn(context.Background(), server); close(done) }()
		req := frame([]byte{msgRequestIdentities})
		client.Write(req[:3])
		time.Sleep(4 * time.Second)
		client.Write(req[3:])
		readReply(t, client)
		time.Sleep(time.Hour)
		if closed() {
			t.Fatal("the deadline of a completed request closed the connection later")
		}
	})
}

// Over MaxConns, the connection idle the longest is closed for the new
// one; a connection in the middle of a request is not.
func TestConnectionCapEvictsIdle(t *testing.T) {
	f := newFakeUnsealer()
	k1, k2 := newTestKey(t, f, "id1", ""), newTestKey(t, f, "id2", "")
	f.block = make(chan struct{})
	f.entered = make(chan string, 2)
	s := New(Config{Unsealer: f, Logger: testLogger(t), MaxConns: 2})
	defer s.Close()
	if err := s.SetIdentities([]Identity{{Blob: k1.blob}, {Blob: k2.blob}}); err != nil {
		t.Fatal(err)
	}
	list := []byte{msgRequestIdentities}
	signReq := func(k *testKey) []byte {
		return ssh.Marshal(struct {
			Type  byte
			Key   []byte
			Data  []byte
			Flags uint32
		}{msgSignRequest, k.pub.Marshal(), []byte("data"), 0})
	}
	// busySign sends a sign request that waits in the Unsealer: once the
	// Unsealer is entered, the connection is busy.
	busySign := func(c net.Conn, k *testKey) <-chan []byte {
		reply := make(chan []byte, 1)
		go func() {
			c.Write(frame(signReq(k)))
			reply <- readReply(t, c)
		}()
		<-f.entered
		return reply
	}

	busy, _ := pipeConn(t, s)
	busyReply := busySign(busy, k1)
	old, oldDone := pipeConn(t, s)
	roundTrip(t, old, list) // admitted; idle once answered

	fresh, _ := pipeConn(t, s)
	if reply := roundTrip(t, fresh, list); reply[0] != msgIdentitiesAnswer {
		t.Fatalf("new connection: reply %x", reply)
	}
	<-oldDone // the idle connection was closed to make room
	if _, err := old.Read(make([]byte, 1)); err == nil {
		t.Error("evicted connection still open")
	}

	// With every connection busy, a new one is refused.
	freshReply := busySign(fresh, k2)
	_, refusedDone := pipeConn(t, s)
	<-refusedDone

	// The busy connections finish their requests.
	close(f.block)
	for _, r := range []<-chan []byte{busyReply, freshReply} {
		if reply := <-r; reply[0] != msgSignResponse {
			t.Errorf("busy connection: reply %x", reply)
		}
	}
}

// A flood of idle connections on the socket does not lock out a new
// client.
func TestIdleFloodDoesNotLockOut(t *testing.T) {
	ts := startServer(t, Config{Unsealer: newFakeUnsealer(), MaxConns: 8})
	var flood []net.Conn
	for range 100 {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		flood = append(flood, c)
	}
	if _, err := ts.dial(t).List(); err != nil {
		t.Fatalf("List under a flood of idle connections: %v", err)
	}
	// The oldest of the flood were closed.
	flood[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := flood[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("oldest idle connection: read %v, want EOF", err)
	}
}

// errListener returns an injected error from Accept when there is one.
type errListener struct {
	net.Listener
	inject chan error
}

func (l *errListener) Accept() (net.Conn, error) {
	select {
	case err := <-l.inject:
		return nil, err
	default:
		return l.Listener.Accept()
	}
}

// When Accept runs out of file descriptors, the longest idle connection
// is closed to free one.
func TestAcceptOutOfDescriptorsEvicts(t *testing.T) {
	s := New(Config{Unsealer: newFakeUnsealer(), Logger: testLogger(t)})
	l := &errListener{Listener: mustListen(t), inject: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- s.Serve(ctx, l) }()
	defer func() { cancel(); <-served; s.Close() }()

	idle, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	roundTrip(t, idle, []byte{msgRequestIdentities})
	l.inject <- &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	// The next connection returns Accept; the one after it sees EMFILE.
	next, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection after EMFILE: read %v, want EOF", err)
	}
	if _, err := agent.NewClient(next).List(); err != nil {
		t.Errorf("List after EMFILE: %v", err)
	}
}

// Out of descriptors with no idle connection, the spare descriptor takes
// a pending connection and refuses it, so that its client sees EOF.
func TestRefuseWithSpare(t *testing.T) {
	s := New(Config{Unsealer: newFakeUnsealer(), Logger: testLogger(t)})
	defer s.Close()
	l := mustListen(t)
	defer l.Close()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	spare := s.refuseWithSpare(l, openSpare())
	if spare == nil {
		t.Fatal("no spare descriptor afterwards")
	}
	spare.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("refused connection: read %v, want EOF", err)
	}
}

// Keys with certificates, of every type, are added over the protocol,
// listed as their certificates, and sign.
func TestAddCertificates(t *testing.T) {
	ts := startServer(t, Config{Unsealer: newFakeUnsealer()})
	a := ts.dial(t)
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caKey)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, priv := range []any{ed, ec, rk} {
		pub, _ := ssh.NewPublicKey(priv.(crypto.Signer).Public())
		cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, KeyId: "test", ValidPrincipals: []string{"user"}, ValidBefore: ssh.CertTimeInfinity}
		if err := cert.SignCert(rand.Reader, ca); err != nil {
			t.Fatal(err)
		}
		if err := a.Add(agent.AddedKey{PrivateKey: priv, Certificate: cert, Comment: "cert"}); err != nil {
			t.Fatalf("%s: Add: %v", cert.Type(), err)
		}
		mustSign(t, a, cert, []byte("data"))
		if err := a.Remove(cert); err != nil {
			t.Fatalf("%s: Remove: %v", cert.Type(), err)
		}
	}
	// A certificate for another key is refused.
	other, _ := ssh.NewPublicKey(ec.Public())
	cert := &ssh.Certificate{Key: other, CertType: ssh.UserCert, KeyId: "test", ValidPrincipals: []string{"user"}, ValidBefore: ssh.CertTimeInfinity}
	cert.SignCert(rand.Reader, ca)
	if err := a.Add(agent.AddedKey{PrivateKey: ed, Certificate: cert}); err == nil {
		t.Error("Add of a certificate for another key succeeded")
	}
}
