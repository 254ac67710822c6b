package agentsrv

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/crypto/ssh"
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

// within reports whether b is empty or lies inside buf's memory.
func within(b, buf []byte) bool {
	if len(b) == 0 {
		return true
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= start && p+uintptr(len(b)) <= start+uintptr(len(buf))
}

// FuzzParseRequest checks the request parser on arbitrary bodies: it
// never panics, every field it returns points into the body (parsing
// copies nothing out of the wiped, locked request buffer), and the key of
// an add request that parses can be built and wiped without panicking.
// The named seeds in testdata/fuzz/FuzzParseRequest hold a well-formed
// request of every kind, including adds of each key type, with and
// without certificates and constraints.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{msgRequestIdentities})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseRequest(body)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if req.typ != body[0] {
			t.Fatalf("type %d, body starts with %d", req.typ, body[0])
		}
		a := &req.add
		for i, f := range [][]byte{req.key, req.data, req.pass, req.extName, req.extContents,
			a.cert, a.edPub, a.edPriv, a.rsaN, a.rsaE, a.rsaD, a.rsaIqmp, a.rsaP, a.rsaQ,
			a.ecCurve, a.ecQ, a.ecD, a.comment} {
			if !within(f, body) {
				t.Fatalf("field %d does not point into the request", i)
			}
		}
		if req.typ != msgAddIdentity && req.typ != msgAddIDConstrained {
			return
		}
		var cert *ssh.Certificate
		if a.cert != nil {
			pub, err := ssh.ParsePublicKey(bytes.Clone(a.cert))
			if err != nil {
				return
			}
			if cert, _ = pub.(*ssh.Certificate); cert == nil {
				return
			}
		}
		if len(a.rsaP) > 65 || len(a.rsaQ) > 65 || len(a.rsaN) > 129 {
			return // keep RSA Precompute cheap
		}
		signer, wipe, err := newSoftSigner(a, cert)
		if err != nil {
			return
		}
		signer.Sign(rand.Reader, []byte("data"))
		wipe()
	})
}
