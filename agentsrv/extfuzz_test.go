package agentsrv

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
)

// The extension payloads a client sends are parsed in place from the
// locked request buffer. These fuzzers check that each parser round-trips
// through its encoder: whatever parses, re-encoded, parses to the same
// request, and encodes to the same bytes again.

// exportedDest turns parsed constraints back into what
// MarshalDestinationConstraints takes.
func exportedDest(dcs []destConstraint) []DestinationConstraint {
	keys := func(ks []hopKey) []HostKey {
		var out []HostKey
		for _, k := range ks {
			out = append(out, HostKey{Key: k.key, CA: k.isCA})
		}
		return out
	}
	var out []DestinationConstraint
	for _, d := range dcs {
		out = append(out, DestinationConstraint{
			FromHost: d.from.hostname, FromKeys: keys(d.from.keys),
			ToUser: d.to.user, ToHost: d.to.hostname, ToKeys: keys(d.to.keys),
		})
	}
	return out
}

// fuzzHostKey is a fixed host key for the seeds.
func fuzzHostKey(t testing.TB, b byte) ssh.PublicKey {
	pub, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize)).Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func seedDestinations(f *testing.F) []DestinationConstraint {
	return []DestinationConstraint{
		{ToUser: "git", ToHost: "forge.example", ToKeys: []HostKey{{Key: fuzzHostKey(f, 1)}}},
		{FromHost: "bastion", FromKeys: []HostKey{{Key: fuzzHostKey(f, 2), CA: true}}, ToHost: "db.internal", ToKeys: []HostKey{{Key: fuzzHostKey(f, 3)}}},
	}
}

func FuzzParseUnsealRequest(f *testing.F) {
	for _, o := range []UnsealOptions{
		{},
		{Lifetime: time.Hour},
		{Confirm: true},
		{PIN: []byte("1234")},
		{Lifetime: 5 * time.Second, Confirm: true, PIN: []byte("pin"), Destinations: seedDestinations(f)},
	} {
		req, err := MarshalUnsealRequest("work", o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(req)
	}
	f.Fuzz(func(t *testing.T, contents []byte) {
		r, ok := parseUnsealRequest(contents)
		if !ok {
			return
		}
		encode := func(r parsedUnseal) []byte {
			b, err := MarshalUnsealRequest(string(r.name), UnsealOptions{
				Lifetime:     time.Duration(r.life) * time.Second,
				Confirm:      r.flags&UnsealConfirm != 0,
				PIN:          r.pin,
				Destinations: exportedDest(r.dest),
			})
			if err != nil {
				t.Fatalf("a parsed request does not encode: %v", err)
			}
			return b
		}
		once := encode(r)
		again, ok := parseUnsealRequest(once)
		if !ok {
			t.Fatalf("the re-encoded request %x does not parse", once)
		}
		if string(again.name) != string(r.name) || again.life != r.life || again.flags != r.flags&UnsealConfirm || !bytes.Equal(again.pin, r.pin) {
			t.Fatalf("round trip changed the request: %+v, then %+v", r, again)
		}
		if twice := encode(again); !bytes.Equal(twice, once) {
			t.Fatalf("encoding is not stable: %x, then %x", once, twice)
		}
	})
}

func FuzzParseDestConstraints(f *testing.F) {
	f.Add(MarshalDestinationConstraints(seedDestinations(f)))
	f.Add(MarshalDestinationConstraints(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := cryptobyte.String(data)
		dcs, err := parseDestConstraints(&in)
		if err != nil {
			return
		}
		once := MarshalDestinationConstraints(exportedDest(dcs))
		in = cryptobyte.String(once)
		again, err := parseDestConstraints(&in)
		if err != nil || !in.Empty() {
			t.Fatalf("the re-encoded constraints %x do not parse: %v", once, err)
		}
		if twice := MarshalDestinationConstraints(exportedDest(again)); !bytes.Equal(twice, once) {
			t.Fatalf("encoding is not stable: %x, then %x", once, twice)
		}
	})
}
