package agentsrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/attest"
)

// Names of the agent protocol extensions the server supports (defined,
// with the wire formats, in package client).
const (
	ExtQuery       = client.ExtQuery
	ExtUnseal      = client.ExtUnseal
	ExtStatus      = client.ExtStatus
	ExtSessionBind = client.ExtSessionBind
	ExtMetrics     = client.ExtMetrics
)

// StatusVersion is the version of the status@icn-agent reply the server
// writes.
const StatusVersion = client.StatusVersion

// msgSuccess is SSH_AGENT_SUCCESS. The request loop sends the bytes an
// extension returns as the whole reply (as x/crypto's agent.ServeAgent
// does), so a reply with content starts with it.
const msgSuccess = 6

// The agent's state as the status@icn-agent extension reports it; the
// types live in package client, which decodes them.
type (
	Status         = client.Status
	IdentityStatus = client.IdentityStatus
	LockoutStatus  = client.LockoutStatus
)

// metricsReply is the reply to metrics@icn-agent (client.Metrics reads
// it).
type metricsReply struct {
	JSON string `sshtype:"6"`
}

// unsealRequest is the content of an unseal@icn-agent request
// (client.Add writes it).
type unsealRequest struct {
	Name         string
	LifetimeSecs uint32
}

// supportedExtensions is the reply to query, in this order; ExtMetrics
// follows when the server has a MetricsReporter.
var supportedExtensions = []string{ExtQuery, ExtUnseal, ExtStatus, ExtSessionBind, attest.Extension, attest.EKExtension, attest.ActivateExtension}

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

// marshalQuery encodes the reply to query: SSH_AGENT_SUCCESS, then each
// supported extension name as an SSH string.
func marshalQuery(names []string) []byte {
	out := []byte{msgSuccess}
	for _, name := range names {
		out = append(out, ssh.Marshal(struct{ Name string }{name})...)
	}
	return out
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
		return client.MarshalStatus(st), nil
	case ExtUnseal:
		return c.extUnseal(contents)
	case ExtSessionBind:
		return c.extSessionBind(contents)
	case attest.Extension:
		return c.extQuote(contents)
	case attest.EKExtension:
		c.debug("agentsrv: extension", slog.String("type", extensionType))
		return s.extEK(c.ctx, c.log)
	case attest.ActivateExtension:
		c.debug("agentsrv: extension", slog.String("type", extensionType))
		return s.extActivate(c.ctx, c.log, contents)
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
