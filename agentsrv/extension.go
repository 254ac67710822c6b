package agentsrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/icn/icn-agent/attest"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Names of the agent protocol extensions the server supports.
const (
	ExtQuery       = "query"
	ExtUnseal      = "unseal@icn-agent"
	ExtStatus      = "status@icn-agent"
	ExtSessionBind = "session-bind@openssh.com"
	ExtMetrics     = "metrics@icn-agent"
)

// StatusVersion is the version of the status@icn-agent reply this package
// writes and reads.
const StatusVersion = 2

// msgSuccess is SSH_AGENT_SUCCESS. The request loop sends the bytes an
// extension returns as the whole reply (as x/crypto's agent.ServeAgent
// does), so a reply with content starts with it.
const msgSuccess = 6

// supportedExtensions is the reply to query, in this order; ExtMetrics
// follows when the server has a MetricsReporter.
var supportedExtensions = []string{ExtQuery, ExtUnseal, ExtStatus, ExtSessionBind, attest.Extension}

// metricsReply is the reply to metrics@icn-agent.
type metricsReply struct {
	JSON string `sshtype:"6"`
}

// unsealRequest is the content of an unseal@icn-agent request.
type unsealRequest struct {
	Name         string
	LifetimeSecs uint32
}

// statusReply is the reply to status@icn-agent. Records holds Identities
// SSH strings, each an identityRecord.
type statusReply struct {
	Version      uint32 `sshtype:"6"`
	Locked       bool
	SoftwareKeys uint32
	Identities   uint32
	Records      []byte `ssh:"rest"`
}

// identityRecord is one sealed identity in a statusReply. Later versions
// may append fields; readers ignore what follows the fields they know.
type identityRecord struct {
	Name           string
	PublicKey      []byte
	Certificate    []byte
	Fingerprint    string
	HardwareBacked bool
	Unsealed       bool
	Expiry         uint64
	UnsealCount    uint64
	Hidden         bool
	LastError      string
	PCRMismatch    []byte // one byte per PCR index
	Extra          []byte `ssh:"rest"`
}

// sessionBindRequest is the content of a session-bind@openssh.com
// request (OpenSSH PROTOCOL.agent).
type sessionBindRequest struct {
	HostKey    []byte
	SessionID  []byte
	Signature  []byte
	Forwarding bool
}

// Limits on session bindings, as in OpenSSH's agent.
const (
	maxSessionBindings = 16
	maxSessionIDLen    = 128
)

// sessionBinding is a verified session-bind@openssh.com: the connection
// belongs to an SSH session with this host key and session identifier.
type sessionBinding struct {
	hostKey    ssh.PublicKey
	sessionID  []byte
	forwarding bool
}

// Status is a snapshot of the agent's state, as returned by Server.Status
// and by the status@icn-agent extension.
type Status struct {
	// Locked reports whether the agent is locked. While it is, the
	// extension reports no identities and no software keys.
	Locked bool
	// SoftwareKeys is the number of keys added with ssh-add.
	SoftwareKeys int
	// Identities are the sealed identities, sorted by name.
	Identities []IdentityStatus
	// Lockout is the TPM's dictionary-attack state, which counts wrong
	// PINs; nil if not known.
	Lockout *LockoutStatus
}

// LockoutStatus is the TPM's dictionary-attack state: after Max failed
// authorizations (wrong PINs), every PIN-protected identity is locked out
// until the TPM forgets failures or its lockout is reset.
type LockoutStatus struct {
	Counter uint32 `json:"counter"`
	Max     uint32 `json:"max"`
}

// lockoutTrailer follows the identity records in a version 2 status reply.
type lockoutTrailer struct {
	Known        bool
	Counter, Max uint32
}

// IdentityStatus describes one sealed identity.
type IdentityStatus struct {
	Name string
	// PublicKey is the identity's ssh-ed25519 key.
	PublicKey ssh.PublicKey
	// Certificate is the identity's certificate, or nil.
	Certificate *ssh.Certificate
	// Fingerprint is the SHA256 fingerprint of PublicKey.
	Fingerprint string
	// HardwareBacked is true for identities whose seed is sealed by a
	// TPM, which is every identity today.
	HardwareBacked bool
	// Unsealed reports whether the seed is cached in memory.
	Unsealed bool
	// Expiry is when the cached seed will be zeroized; zero if it is not
	// cached or has no expiry. The wire format has one-second resolution.
	Expiry time.Time
	// UnsealCount counts successful unseals since the identity was
	// installed.
	UnsealCount uint64
	// Hidden reports whether a client removed the identity (ssh-add -d).
	Hidden bool
	// LastError is the error of the last failed unseal, cleared by a
	// successful one.
	LastError string
	// PCRMismatch lists the PCRs whose last known value differs from the
	// value recorded when the identity was sealed: while it is non-empty
	// the TPM will not unseal it. Known only once UpdatePCRs was called.
	PCRMismatch []int
}

// Status returns a snapshot of the server's state. Unlike the
// status@icn-agent extension, it reports the identities even while the
// agent is locked.
func (s *Server) Status() *Status {
	s.mu.RLock()
	locked := s.locked
	s.mu.RUnlock()
	var lockout *LockoutStatus
	if s.lockout != nil && !locked {
		ctx, cancel := context.WithTimeout(s.base, time.Second)
		if c, m, err := s.lockout(ctx); err == nil {
			lockout = &LockoutStatus{Counter: c, Max: m}
		}
		cancel()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := &Status{Locked: s.locked, SoftwareKeys: len(s.soft), Lockout: lockout}
	for _, e := range s.sealed {
		is := IdentityStatus{
			Name:           e.name,
			PublicKey:      e.blob.PublicKey,
			Certificate:    e.cert,
			Fingerprint:    e.fp,
			HardwareBacked: true,
			Hidden:         e.hidden,
		}
		e.mu.RLock()
		is.Unsealed = e.key != nil
		if e.key != nil {
			is.Expiry = e.expiry
		}
		is.UnsealCount = e.unseals
		is.LastError = e.lastErr
		e.mu.RUnlock()
		is.PCRMismatch = pcrMismatch(e.blob, s.pcrs)
		st.Identities = append(st.Identities, is)
	}
	return st
}

// marshalStatus encodes st as a status@icn-agent reply.
func marshalStatus(st *Status) []byte {
	var records []byte
	for _, is := range st.Identities {
		r := identityRecord{
			Name:           is.Name,
			PublicKey:      is.PublicKey.Marshal(),
			Fingerprint:    is.Fingerprint,
			HardwareBacked: is.HardwareBacked,
			Unsealed:       is.Unsealed,
			UnsealCount:    is.UnsealCount,
			Hidden:         is.Hidden,
			LastError:      is.LastError,
		}
		for _, p := range is.PCRMismatch {
			r.PCRMismatch = append(r.PCRMismatch, byte(p))
		}
		if is.Certificate != nil {
			r.Certificate = is.Certificate.Marshal()
		}
		if !is.Expiry.IsZero() && is.Expiry.Unix() > 0 {
			r.Expiry = uint64(is.Expiry.Unix())
		}
		records = append(records, ssh.Marshal(struct{ Record []byte }{ssh.Marshal(&r)})...)
	}
	var tr lockoutTrailer
	if st.Lockout != nil {
		tr = lockoutTrailer{Known: true, Counter: st.Lockout.Counter, Max: st.Lockout.Max}
	}
	records = append(records, ssh.Marshal(&tr)...)
	return ssh.Marshal(&statusReply{
		Version:      StatusVersion,
		Locked:       st.Locked,
		SoftwareKeys: uint32(st.SoftwareKeys),
		Identities:   uint32(len(st.Identities)),
		Records:      records,
	})
}

// parseStatus decodes a status@icn-agent reply, message type byte
// included.
func parseStatus(reply []byte) (*Status, error) {
	if len(reply) >= 5 && reply[0] == msgSuccess {
		// Check the version before the layout, so that a newer agent
		// gets a clear error rather than a parse failure.
		if v := uint32(reply[1])<<24 | uint32(reply[2])<<16 | uint32(reply[3])<<8 | uint32(reply[4]); v != 1 && v != StatusVersion {
			return nil, fmt.Errorf("agentsrv: status reply version %d, this client reads versions 1 and %d", v, StatusVersion)
		}
	}
	var w statusReply
	if err := ssh.Unmarshal(reply, &w); err != nil {
		return nil, fmt.Errorf("agentsrv: malformed status reply: %w", err)
	}
	st := &Status{Locked: w.Locked, SoftwareKeys: int(w.SoftwareKeys)}
	rest := w.Records
	for i := uint32(0); i < w.Identities; i++ {
		var rec struct {
			Record []byte
			Rest   []byte `ssh:"rest"`
		}
		if err := ssh.Unmarshal(rest, &rec); err != nil {
			return nil, fmt.Errorf("agentsrv: malformed status reply: identity %d: %w", i, err)
		}
		rest = rec.Rest
		var r identityRecord
		if err := ssh.Unmarshal(rec.Record, &r); err != nil {
			return nil, fmt.Errorf("agentsrv: malformed status reply: identity %d: %w", i, err)
		}
		pub, err := ssh.ParsePublicKey(r.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("agentsrv: malformed status reply: identity %q: %w", r.Name, err)
		}
		is := IdentityStatus{
			Name:           r.Name,
			PublicKey:      pub,
			Fingerprint:    r.Fingerprint,
			HardwareBacked: r.HardwareBacked,
			Unsealed:       r.Unsealed,
			UnsealCount:    r.UnsealCount,
			Hidden:         r.Hidden,
			LastError:      r.LastError,
		}
		for _, p := range r.PCRMismatch {
			is.PCRMismatch = append(is.PCRMismatch, int(p))
		}
		if len(r.Certificate) > 0 {
			k, err := ssh.ParsePublicKey(r.Certificate)
			if err != nil {
				return nil, fmt.Errorf("agentsrv: malformed status reply: identity %q certificate: %w", r.Name, err)
			}
			cert, ok := k.(*ssh.Certificate)
			if !ok {
				return nil, fmt.Errorf("agentsrv: malformed status reply: identity %q: certificate field holds a %s key", r.Name, k.Type())
			}
			is.Certificate = cert
		}
		if r.Expiry != 0 && r.Expiry < 1<<62 {
			is.Expiry = time.Unix(int64(r.Expiry), 0)
		}
		st.Identities = append(st.Identities, is)
	}
	if w.Version >= 2 {
		var tr struct {
			Known        bool
			Counter, Max uint32
			Rest         []byte `ssh:"rest"`
		}
		if err := ssh.Unmarshal(rest, &tr); err != nil {
			return nil, fmt.Errorf("agentsrv: malformed status reply: lockout: %w", err)
		}
		if tr.Known {
			st.Lockout = &LockoutStatus{Counter: tr.Counter, Max: tr.Max}
		}
		rest = tr.Rest
	}
	if len(rest) != 0 {
		return nil, errors.New("agentsrv: malformed status reply: trailing data")
	}
	return st, nil
}

// marshalQuery encodes the reply to query: SSH_AGENT_SUCCESS, then each
// supported extension name as an SSH string.
func marshalQuery(names []string) []byte {
	out := []byte{msgSuccess}
	for _, name := range names {
		out = append(out, ssh.Marshal(struct{ Name string }{name})...)
	}
	return out
}

// parseQuery decodes a reply to query, message type byte included.
func parseQuery(reply []byte) ([]string, error) {
	if len(reply) == 0 || reply[0] != msgSuccess {
		return nil, errors.New("agentsrv: malformed query reply")
	}
	var names []string
	rest := reply[1:]
	for len(rest) > 0 {
		var n struct {
			Name string
			Rest []byte `ssh:"rest"`
		}
		if err := ssh.Unmarshal(rest, &n); err != nil {
			return nil, fmt.Errorf("agentsrv: malformed query reply: %w", err)
		}
		names = append(names, n.Name)
		rest = n.Rest
	}
	return names, nil
}

// Extension handles the agent protocol extensions; see the package
// documentation for their formats. Unknown extensions get
// agent.ErrExtensionUnsupported, which the request loop turns into
// SSH_AGENT_FAILURE; other errors become SSH_AGENT_EXTENSION_FAILURE.
func (c *conn) Extension(extensionType string, contents []byte) ([]byte, error) {
	s := c.s
	switch extensionType {
	case ExtQuery:
		c.debug("agentsrv: extension", slog.String("type", extensionType))
		names := supportedExtensions
		if _, ok := s.metrics.(MetricsReporter); ok {
			names = append(slices.Clip(names), ExtMetrics)
		}
		return marshalQuery(names), nil
	case ExtStatus:
		c.debug("agentsrv: extension", slog.String("type", extensionType))
		st := s.Status()
		if st.Locked {
			st = &Status{Locked: true}
		}
		return marshalStatus(st), nil
	case ExtUnseal:
		return c.extUnseal(contents)
	case ExtSessionBind:
		return c.extSessionBind(contents)
	case attest.Extension:
		return c.extQuote(contents)
	case ExtMetrics:
		return c.extMetrics()
	default:
		c.debug("agentsrv: unsupported extension", slog.String("type", extensionType))
		return nil, agent.ErrExtensionUnsupported
	}
}

// extUnseal unseals an identity now, un-hides it and sets its expiry.
func (c *conn) extUnseal(contents []byte) ([]byte, error) {
	s := c.s
	// contents is a slice of the connection's locked request buffer,
	// wiped after the reply. It is parsed in place: a field carrying a
	// secret (a PIN) must be handed on as a slice of it, never copied
	// into a string or a fresh slice.
	var req unsealRequest
	var name []byte
	in := cryptobyte.String(contents)
	if !readString(&in, &name) || !in.ReadUint32(&req.LifetimeSecs) || !in.Empty() {
		return nil, fmt.Errorf("%w: %s", errMalformed, ExtUnseal)
	}
	req.Name = string(name)
	life := s.autoLock()
	if req.LifetimeSecs > 0 {
		life = time.Duration(req.LifetimeSecs) * time.Second
	}
	c.debug("agentsrv: extension", slog.String("type", ExtUnseal), slog.String("name", req.Name), slog.Duration("lifetime", life))
	s.mu.RLock()
	locked, e := s.locked, s.byName[req.Name]
	s.mu.RUnlock()
	if locked {
		return nil, ErrLocked
	}
	if e == nil {
		return nil, fmt.Errorf("%w: no identity named %q", ErrNotFound, req.Name)
	}
	if _, err := s.unseal(c.ctx, e, life, true); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if e.hidden && !e.isRetired() {
		e.hidden = false
		s.log.Info("agentsrv: identity restored", "name", e.name, "fingerprint", e.fp)
	}
	s.mu.Unlock()
	return []byte{msgSuccess}, nil
}

// extMetrics reports the server's counters, if its Metrics can. Like
// everything but status, it fails while the agent is locked.
func (c *conn) extMetrics() ([]byte, error) {
	s := c.s
	r, ok := s.metrics.(MetricsReporter)
	if !ok {
		c.debug("agentsrv: unsupported extension", slog.String("type", ExtMetrics))
		return nil, agent.ErrExtensionUnsupported
	}
	c.debug("agentsrv: extension", slog.String("type", ExtMetrics))
	s.mu.RLock()
	locked := s.locked
	s.mu.RUnlock()
	if locked {
		return nil, ErrLocked
	}
	data, err := r.MetricsJSON()
	if err != nil {
		return nil, fmt.Errorf("agentsrv: metrics: %w", err)
	}
	return ssh.Marshal(&metricsReply{JSON: string(data)}), nil
}

func (e *sealed) isRetired() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.retired
}

// extSessionBind verifies and records a session-bind@openssh.com request,
// following OpenSSH's rules: the host key must have signed the session
// identifier; a connection bound for authentication (not forwarding)
// accepts no further binding; a session identifier may be bound only to
// one host key; at most 16 bindings per connection.
func (c *conn) extSessionBind(contents []byte) ([]byte, error) {
	s := c.s
	s.mu.RLock()
	locked := s.locked
	s.mu.RUnlock()
	if locked {
		return nil, ErrLocked
	}
	var req sessionBindRequest
	if err := ssh.Unmarshal(contents, &req); err != nil {
		return nil, fmt.Errorf("agentsrv: malformed %s request: %w", ExtSessionBind, err)
	}
	if len(req.SessionID) == 0 || len(req.SessionID) > maxSessionIDLen {
		return nil, fmt.Errorf("agentsrv: session-bind: session identifier of %d bytes", len(req.SessionID))
	}
	// The parsed key aliases its input, and the request buffer is wiped
	// and reused after the reply: the binding keeps a copy.
	hostKey, err := ssh.ParsePublicKey(bytes.Clone(req.HostKey))
	if err != nil {
		return nil, fmt.Errorf("agentsrv: session-bind: host key: %w", err)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(req.Signature, &sig); err != nil {
		return nil, fmt.Errorf("agentsrv: session-bind: signature: %w", err)
	}
	fp := ssh.FingerprintSHA256(hostKey)
	if err := hostKey.Verify(req.SessionID, &sig); err != nil {
		c.log.Warn("agentsrv: session-bind with a bad signature", "host_key", fp, "err", err)
		return nil, fmt.Errorf("agentsrv: session-bind: signature does not verify: %w", err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	hkWire := hostKey.Marshal()
	for _, b := range c.bindings {
		if !b.forwarding {
			return nil, errors.New("agentsrv: session-bind: connection already bound for authentication")
		}
		if bytes.Equal(b.sessionID, req.SessionID) {
			if bytes.Equal(b.hostKey.Marshal(), hkWire) {
				return []byte{msgSuccess}, nil // already recorded
			}
			return nil, errors.New("agentsrv: session-bind: session identifier already bound to another host key")
		}
	}
	if len(c.bindings) >= maxSessionBindings {
		return nil, errors.New("agentsrv: session-bind: too many bindings on this connection")
	}
	c.bindings = append(c.bindings, sessionBinding{
		hostKey:    hostKey,
		sessionID:  bytes.Clone(req.SessionID),
		forwarding: req.Forwarding,
	})
	c.debug("agentsrv: session bound", slog.String("host_key", fp), slog.Bool("forwarding", req.Forwarding))
	return []byte{msgSuccess}, nil
}
