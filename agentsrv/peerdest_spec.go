package agentsrv

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
)

// HostKey is a host key a destination hop accepts: the host's own key,
// or (CA) a certificate authority whose host certificates it accepts.
type HostKey struct {
	Key ssh.PublicKey
	CA  bool
}

// DestinationConstraint allows a sealed identity to be used for one hop
// (ssh-add -h's semantics): from FromHost, whose keys are FromKeys (empty
// for this machine), to ToHost with ToKeys, as a user matching ToUser (a
// pattern; empty for any).
type DestinationConstraint struct {
	FromHost string
	FromKeys []HostKey
	ToUser   string
	ToHost   string
	ToKeys   []HostKey
}

func (d DestinationConstraint) internal() destConstraint {
	conv := func(ks []HostKey) []hopKey {
		var out []hopKey
		for _, k := range ks {
			out = append(out, hopKey{key: k.Key, isCA: k.CA})
		}
		return out
	}
	return destConstraint{
		from: destHop{hostname: d.FromHost, keys: conv(d.FromKeys)},
		to:   destHop{user: d.ToUser, hostname: d.ToHost, keys: conv(d.ToKeys)},
	}
}

// destConstraints converts and checks constraints as parseDestConstraints
// checks those on the wire.
func destConstraints(ds []DestinationConstraint) ([]destConstraint, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	b := MarshalDestinationConstraints(ds)
	in := cryptobyte.String(b)
	return parseDestConstraints(&in)
}

// MarshalDestinationConstraints encodes constraints as the contents of
// restrict-destination-v00@openssh.com (after its name): a string
// holding each constraint as a string.
func MarshalDestinationConstraints(ds []DestinationConstraint) []byte {
	hop := func(b *cryptobyte.Builder, user, host string, keys []HostKey) {
		b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
			addString(b, []byte(user))
			addString(b, []byte(host))
			addString(b, nil)
			for _, k := range keys {
				addString(b, k.Key.Marshal())
				ca := uint8(0)
				if k.CA {
					ca = 1
				}
				b.AddUint8(ca)
			}
		})
	}
	var b cryptobyte.Builder
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, d := range ds {
			b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
				hop(b, "", d.FromHost, d.FromKeys)
				hop(b, d.ToUser, d.ToHost, d.ToKeys)
				addString(b, nil)
			})
		}
	})
	return b.BytesOrPanic()
}

func addString(b *cryptobyte.Builder, s []byte) {
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s) })
}

// ErrNoHostKeys is returned (wrapped) for a destination whose host keys
// no known_hosts file has.
var ErrNoHostKeys = errors.New("agentsrv: no host keys found for destination")

// ParseDestinations builds constraints from ssh-add -h style
// destinations, "[user@]host" or "host>[user@]host", with the host keys
// (and @cert-authority keys) the known_hosts files list for each host
// name, plain or hashed.
func ParseDestinations(specs []string, knownHosts ...string) ([]DestinationConstraint, error) {
	var out []DestinationConstraint
	for _, spec := range specs {
		var d DestinationConstraint
		from, to, hop := strings.Cut(spec, ">")
		if !hop {
			to, from = from, ""
		}
		if from != "" {
			if strings.Contains(from, "@") {
				return nil, fmt.Errorf("agentsrv: destination %q: no user in the hop's origin", spec)
			}
			keys, err := hostKeysFor(from, knownHosts)
			if err != nil {
				return nil, err
			}
			d.FromHost, d.FromKeys = from, keys
		}
		if at := strings.LastIndexByte(to, '@'); at >= 0 {
			d.ToUser, to = to[:at], to[at+1:]
		}
		if to == "" {
			return nil, fmt.Errorf("agentsrv: destination %q: no host", spec)
		}
		keys, err := hostKeysFor(to, knownHosts)
		if err != nil {
			return nil, err
		}
		d.ToHost, d.ToKeys = to, keys
		out = append(out, d)
	}
	return out, nil
}

// hostKeysFor returns the keys the known_hosts files list for host.
func hostKeysFor(host string, files []string) ([]HostKey, error) {
	var keys []HostKey
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(io.LimitReader(f, maxKnownHosts))
		sc.Buffer(make([]byte, 0, 4096), 64<<10)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 || line[0] == '#' {
				continue
			}
			marker, hosts, pub, _, _, err := ssh.ParseKnownHosts(line)
			if err != nil || pub == nil || marker == "revoked" || !hostListMatches(hosts, host) {
				continue
			}
			keys = append(keys, HostKey{Key: pub, CA: marker == "cert-authority"})
		}
		f.Close()
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w %q in %s", ErrNoHostKeys, host, strings.Join(files, ", "))
	}
	return keys, nil
}

// hostListMatches reports whether a known_hosts line's host patterns
// match host: a plain or wildcard pattern, or a hashed name; a matching
// negated pattern excludes the line.
func hostListMatches(patterns []string, host string) bool {
	matched := false
	for _, p := range patterns {
		if salt, hash, ok := parseHashed(p); ok {
			m := hmac.New(sha1.New, salt)
			m.Write([]byte(host))
			if hmac.Equal(m.Sum(nil), hash) {
				matched = true
			}
			continue
		}
		neg := strings.HasPrefix(p, "!")
		if matchPattern(strings.ToLower(host), strings.ToLower(strings.TrimPrefix(p, "!"))) {
			if neg {
				return false
			}
			matched = true
		}
	}
	return matched
}
