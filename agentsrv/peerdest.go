package agentsrv

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
)

// Destination constraints (ssh-add -h, OpenSSH 8.9+): a key added with
// restrict-destination-v00@openssh.com may be used only to authenticate
// along the hops its constraints list, as OpenSSH's agent enforces them
// (PROTOCOL.agent; ssh-agent.c identity_permitted):
//
//   - On a connection without session bindings (local use: ssh-keygen -Y,
//     git) the key is listed, but it signs nothing: a signature must be a
//     user authentication the agent can check.
//   - Otherwise each binding is a hop, the first from this machine. Every
//     hop must be allowed by a constraint whose "from" is the previous
//     hop's host key (none for the first) and whose "to" is the hop's host
//     key (or a host certificate by a listed CA, valid for the
//     constraint's host name). All bindings but the last must be for
//     forwarding (ssh -A), and the last must not be when signing.
//   - A signature must be an SSH user authentication request for the
//     connection's last session, whose user matches the last hop's user
//     pattern and whose host-bound key (publickey-hostbound-v00) is the
//     last bound host key.
//   - A key that may be used at the last (forwarding) hop but not beyond
//     it is not listed there.
//   - A failed session-bind makes every constrained key unusable on that
//     connection.

// ExtRestrictDestination is the name of the destination constraint.
const ExtRestrictDestination = "restrict-destination-v00@openssh.com"

// Limits, as in OpenSSH's agent.
const (
	maxDestConstraints = 1024
	maxUserPattern     = 255
)

// ErrNotPermitted is returned (wrapped) for a signature a key's
// destination constraints do not allow.
var ErrNotPermitted = errors.New("agentsrv: key not permitted for this destination")

// destHop is one end of a destination constraint.
type destHop struct {
	user     string // pattern; "" for any
	hostname string // "" for the origin (a from hop) or any
	keys     []hopKey
}

type hopKey struct {
	key  ssh.PublicKey
	isCA bool
}

// destConstraint allows a hop from one host to another.
type destConstraint struct {
	from, to destHop
}

// parseDestConstraints parses the contents of a restrict-destination
// constraint extension (after its name): a string holding a sequence of
// constraints. Keys are copied out of data, which is the request buffer.
func parseDestConstraints(data *cryptobyte.String) ([]destConstraint, error) {
	var all []byte
	if !readString(data, &all) {
		return nil, fmt.Errorf("%w: %s", errMalformed, ExtRestrictDestination)
	}
	in := cryptobyte.String(all)
	var out []destConstraint
	for !in.Empty() {
		if len(out) >= maxDestConstraints {
			return nil, fmt.Errorf("agentsrv: %s: more than %d constraints", ExtRestrictDestination, maxDestConstraints)
		}
		var dc, from, to, ext []byte
		if !readString(&in, &dc) {
			return nil, fmt.Errorf("%w: %s", errMalformed, ExtRestrictDestination)
		}
		d := cryptobyte.String(dc)
		if !readString(&d, &from) || !readString(&d, &to) || !readString(&d, &ext) {
			return nil, fmt.Errorf("%w: %s", errMalformed, ExtRestrictDestination)
		}
		if len(ext) != 0 {
			return nil, fmt.Errorf("agentsrv: %s: unsupported extensions", ExtRestrictDestination)
		}
		var c destConstraint
		var err error
		if c.from, err = parseDestHop(from); err != nil {
			return nil, err
		}
		if c.to, err = parseDestHop(to); err != nil {
			return nil, err
		}
		if (c.from.hostname == "") != (len(c.from.keys) == 0) || c.from.user != "" {
			return nil, fmt.Errorf("agentsrv: %s: inconsistent \"from\" hop", ExtRestrictDestination)
		}
		if c.to.hostname == "" || len(c.to.keys) == 0 {
			return nil, fmt.Errorf("agentsrv: %s: incomplete \"to\" hop", ExtRestrictDestination)
		}
		out = append(out, c)
	}
	return out, nil
}

func parseDestHop(b []byte) (destHop, error) {
	var h destHop
	var user, host, ext []byte
	in := cryptobyte.String(b)
	if !readString(&in, &user) || !readString(&in, &host) || !readString(&in, &ext) {
		return h, fmt.Errorf("%w: %s hop", errMalformed, ExtRestrictDestination)
	}
	if len(ext) != 0 {
		return h, fmt.Errorf("agentsrv: %s: unsupported hop extensions", ExtRestrictDestination)
	}
	if len(user) > maxUserPattern {
		return h, fmt.Errorf("agentsrv: %s: user pattern too long", ExtRestrictDestination)
	}
	h.user, h.hostname = string(user), string(host)
	for !in.Empty() {
		var blob []byte
		var isCA uint8
		if !readString(&in, &blob) || !in.ReadUint8(&isCA) {
			return h, fmt.Errorf("%w: %s hop key", errMalformed, ExtRestrictDestination)
		}
		k, err := ssh.ParsePublicKey(bytes.Clone(blob))
		if err != nil {
			return h, fmt.Errorf("agentsrv: %s: hop key: %w", ExtRestrictDestination, err)
		}
		h.keys = append(h.keys, hopKey{key: k, isCA: isCA != 0})
	}
	return h, nil
}

// matchHop reports whether key (a bound host key) is one of h's keys, or
// a host certificate for h's host name by one of its CAs.
func matchHop(key ssh.PublicKey, h *destHop, now time.Time) bool {
	if key == nil {
		return false
	}
	cert, isCert := key.(*ssh.Certificate)
	wire := key.Marshal()
	for _, hk := range h.keys {
		if !isCert {
			if !hk.isCA && bytes.Equal(wire, hk.key.Marshal()) {
				return true
			}
			continue
		}
		if !hk.isCA || !bytes.Equal(cert.SignatureKey.Marshal(), hk.key.Marshal()) {
			continue
		}
		if hostCertValid(cert, h.hostname, now) {
			return true
		}
	}
	return false
}

// hostCertValid checks a host certificate for hostname, as OpenSSH's
// sshkey_cert_check_host does: a host certificate, in its validity
// period, listing hostname among its principals (an empty list allows
// any), with a signature by its CA that verifies.
func hostCertValid(cert *ssh.Certificate, hostname string, now time.Time) bool {
	if cert.CertType != ssh.HostCert {
		return false
	}
	t := uint64(now.Unix())
	if t < cert.ValidAfter || (cert.ValidBefore != ssh.CertTimeInfinity && t >= cert.ValidBefore) {
		return false
	}
	if len(cert.ValidPrincipals) > 0 && !slices.Contains(cert.ValidPrincipals, hostname) {
		return false
	}
	c := &ssh.CertChecker{IsHostAuthority: func(ssh.PublicKey, string) bool { return true }, Clock: func() time.Time { return now }}
	return c.CheckCert(hostname, cert) == nil
}

// permittedBy is OpenSSH's permitted_by_dest_constraints: whether one of
// dcs allows a hop from fromKey (nil: this machine) to toKey (nil: any)
// for user ("" when not signing).
func permittedBy(dcs []destConstraint, fromKey, toKey ssh.PublicKey, user string, now time.Time) bool {
	for i := range dcs {
		d := &dcs[i]
		if fromKey == nil {
			if d.from.hostname != "" || len(d.from.keys) != 0 {
				continue
			}
		} else if !matchHop(fromKey, &d.from, now) {
			continue
		}
		if toKey != nil && !matchHop(toKey, &d.to, now) {
			continue
		}
		if d.to.user != "" && user != "" && !matchPattern(user, d.to.user) {
			continue
		}
		return true
	}
	return false
}

// identityPermitted is OpenSSH's identity_permitted: whether a key with
// constraints dcs may be used over a connection with these bindings, for
// a signature as user (signing) or to be listed (!signing).
func identityPermitted(dcs []destConstraint, bindings []sessionBinding, bindFailed bool, signing bool, user string, now time.Time) error {
	if len(dcs) == 0 {
		return nil
	}
	if bindFailed && len(bindings) == 0 {
		return fmt.Errorf("%w: a session-bind on this connection failed", ErrNotPermitted)
	}
	if len(bindings) == 0 {
		return nil // local use
	}
	var from ssh.PublicKey
	for i, b := range bindings {
		last := i == len(bindings)-1
		u := ""
		if last {
			u = user
			if b.forwarding && signing {
				return fmt.Errorf("%w: asked to sign on a forwarding hop", ErrNotPermitted)
			}
		} else if !b.forwarding {
			return fmt.Errorf("%w: forwarded through a session bound for authentication", ErrNotPermitted)
		}
		if !permittedBy(dcs, from, b.hostKey, u, now) {
			return fmt.Errorf("%w: hop %d to %s", ErrNotPermitted, i+1, ssh.FingerprintSHA256(b.hostKey))
		}
		from = b.hostKey
	}
	last := bindings[len(bindings)-1]
	if last.forwarding && !signing && !permittedBy(dcs, last.hostKey, nil, "", now) {
		return fmt.Errorf("%w: permitted at %s but not beyond", ErrNotPermitted, ssh.FingerprintSHA256(last.hostKey))
	}
	return nil
}

// userAuth is what a signature request's data says when it is an SSH
// user authentication request (RFC 4252 section 7).
type userAuth struct {
	sessionID []byte
	user      string
	hostKey   ssh.PublicKey // publickey-hostbound-v00@openssh.com only
}

const msgUserAuthRequest = 50

// parseUserAuth parses data as the user authentication request OpenSSH's
// agent accepts for a constrained key (parse_userauth_request): for the
// key keyWire, service ssh-connection, method publickey or
// publickey-hostbound-v00@openssh.com, nothing after.
func parseUserAuth(data, keyWire []byte, keyType string) (*userAuth, error) {
	in := cryptobyte.String(data)
	var sid, user, service, method, alg, key []byte
	var t, sigFollows uint8
	if !readString(&in, &sid) || len(sid) == 0 || !in.ReadUint8(&t) || !readString(&in, &user) ||
		!readString(&in, &service) || !readString(&in, &method) || !in.ReadUint8(&sigFollows) ||
		!readString(&in, &alg) || !readString(&in, &key) {
		return nil, errors.New("not a user authentication request")
	}
	if t != msgUserAuthRequest || sigFollows != 1 || string(service) != "ssh-connection" ||
		!bytes.Equal(key, keyWire) || !algMatchesKey(string(alg), keyType) {
		return nil, errors.New("not a user authentication request for this key")
	}
	ua := &userAuth{sessionID: sid, user: string(user)}
	switch string(method) {
	case "publickey-hostbound-v00@openssh.com":
		var hk []byte
		if !readString(&in, &hk) {
			return nil, errors.New("malformed host-bound user authentication request")
		}
		k, err := ssh.ParsePublicKey(bytes.Clone(hk))
		if err != nil {
			return nil, fmt.Errorf("host key in user authentication request: %w", err)
		}
		ua.hostKey = k
	case "publickey":
	default:
		return nil, fmt.Errorf("user authentication method %q", method)
	}
	if !in.Empty() {
		return nil, errors.New("trailing data after the user authentication request")
	}
	return ua, nil
}

// algMatchesKey reports whether a signature algorithm name is one for a
// key of type keyType (OpenSSH compares key types: rsa-sha2-* are RSA).
func algMatchesKey(alg, keyType string) bool {
	if alg == keyType {
		return true
	}
	switch keyType {
	case ssh.KeyAlgoRSA:
		return alg == ssh.KeyAlgoRSASHA256 || alg == ssh.KeyAlgoRSASHA512
	case ssh.CertAlgoRSAv01:
		return alg == ssh.CertAlgoRSASHA256v01 || alg == ssh.CertAlgoRSASHA512v01
	}
	return false
}

// checkDestination enforces the destination constraints dcs on a
// signature of data with the key keyWire over this connection.
func (c *conn) checkDestination(dcs []destConstraint, keyWire []byte, keyType string, data []byte) error {
	c.mu.Lock()
	bindings := slices.Clone(c.bindings)
	failed := c.bindTried
	c.mu.Unlock()
	if len(bindings) == 0 {
		return fmt.Errorf("%w: the key is destination-constrained and the connection is not bound to an SSH session", ErrNotPermitted)
	}
	ua, err := parseUserAuth(data, keyWire, keyType)
	if err != nil {
		return fmt.Errorf("%w: the key is destination-constrained and the data is %v", ErrNotPermitted, err)
	}
	now := c.s.wallNow()
	if err := identityPermitted(dcs, bindings, failed, true, ua.user, now); err != nil {
		return err
	}
	last := bindings[len(bindings)-1]
	if !bytes.Equal(ua.sessionID, last.sessionID) {
		return fmt.Errorf("%w: the request is for another session than the one last bound", ErrNotPermitted)
	}
	if len(bindings) > 1 && ua.hostKey == nil {
		return fmt.Errorf("%w: no host key in the request over a forwarded connection", ErrNotPermitted)
	}
	if ua.hostKey != nil && !bytes.Equal(ua.hostKey.Marshal(), last.hostKey.Marshal()) {
		return fmt.Errorf("%w: the request's host key is not the one last bound", ErrNotPermitted)
	}
	return nil
}

// listPermitter returns the test for listing keys with destination
// constraints on this connection.
func (c *conn) listPermitter() func(dcs []destConstraint) bool {
	c.mu.Lock()
	bindings := slices.Clone(c.bindings)
	failed := c.bindTried
	c.mu.Unlock()
	now := c.s.wallNow()
	return func(dcs []destConstraint) bool {
		return identityPermitted(dcs, bindings, failed, false, "", now) == nil
	}
}

// matchPattern is OpenSSH's match_pattern: '*' matches any run of
// characters, '?' any one.
func matchPattern(s, pattern string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 0 && pattern[0] == '*' {
				pattern = pattern[1:]
			}
			if pattern == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if matchPattern(s[i:], pattern) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
		}
		s, pattern = s[1:], pattern[1:]
	}
	return s == ""
}
