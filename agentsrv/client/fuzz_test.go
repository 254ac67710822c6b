package client

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// FuzzParseStatus feeds ParseStatus arbitrary replies, as a hostile or
// broken agent could send. It must not panic, and whatever it accepts
// must survive a round trip through MarshalStatus unchanged. The named
// seeds in testdata/fuzz/FuzzParseStatus cover each version, every
// optional field, and the malformed replies the parser must refuse.
func FuzzParseStatus(f *testing.F) {
	for _, st := range seedStatuses(f) {
		f.Add(MarshalStatus(st))
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		st, err := ParseStatus(reply)
		if err != nil {
			if st != nil {
				t.Fatal("ParseStatus returned a status with an error")
			}
			return
		}
		wire := MarshalStatus(st)
		again, err := ParseStatus(wire)
		if err != nil {
			t.Fatalf("MarshalStatus wrote a reply ParseStatus refuses: %v", err)
		}
		if !bytes.Equal(MarshalStatus(again), wire) {
			t.Fatal("round trip changed the status")
		}
	})
}

// seedStatuses are statuses that exercise every field of the reply.
func seedStatuses(tb testing.TB) []*Status {
	pub := ssh.PublicKey(nil)
	{
		k, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public())
		if err != nil {
			tb.Fatal(err)
		}
		pub = k
	}
	cert := &ssh.Certificate{Key: pub, Serial: 1, CertType: ssh.UserCert, KeyId: "alice",
		ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity}
	signer, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	if err := cert.SignCert(zeroReader{}, signer); err != nil {
		tb.Fatal(err)
	}
	return []*Status{
		{},
		{Locked: true, SoftwareKeys: 1},
		{SoftwareKeys: 2, Lockout: &LockoutStatus{Counter: 3, Max: 32}, Identities: []IdentityStatus{
			{Name: "alice", PublicKey: pub, Certificate: cert, Fingerprint: ssh.FingerprintSHA256(pub),
				HardwareBacked: true, Unsealed: true, Expiry: time.Unix(1700000000, 0), UnsealCount: 5},
			{Name: "bob", PublicKey: pub, Fingerprint: ssh.FingerprintSHA256(pub), HardwareBacked: true,
				Hidden: true, LastError: "sealstore: bob: wrong PIN", PCRMismatch: []int{0, 7}},
		}},
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// marshalQuery is the agent's encoding of a query reply.
func marshalQuery(names []string) []byte {
	out := []byte{msgSuccess}
	for _, name := range names {
		out = append(out, ssh.Marshal(struct{ Name string }{name})...)
	}
	return out
}

// FuzzParseQuery feeds parseQuery arbitrary replies to the query
// extension; whatever it accepts must be exactly the agent's encoding of
// the names it returns.
func FuzzParseQuery(f *testing.F) {
	f.Add(marshalQuery(nil))
	f.Add(marshalQuery([]string{"query", "status@icn-agent", "unseal@icn-agent", "quote@icn-agent"}))
	f.Add([]byte{msgSuccess, 0, 0, 0, 9, 'x'})
	f.Fuzz(func(t *testing.T, reply []byte) {
		names, err := parseQuery(reply)
		if err != nil {
			return
		}
		if again := marshalQuery(names); !bytes.Equal(again, reply) {
			t.Fatalf("reply %x re-encodes as %x", reply, again)
		}
	})
}
