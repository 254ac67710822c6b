package client

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// Names of the agent protocol extensions icn-agent supports.
const (
	ExtQuery       = "query"
	ExtUnseal      = "unseal@icn-agent"
	ExtStatus      = "status@icn-agent"
	ExtSessionBind = "session-bind@openssh.com"
	ExtMetrics     = "metrics@icn-agent"
)

// StatusVersion is the version of the status@icn-agent reply
// MarshalStatus writes; ParseStatus reads it and version 1.
const StatusVersion = 2

// Errors of ParseStatus.
var (
	ErrMalformedStatus = errors.New("client: malformed status reply")
	ErrStatusVersion   = errors.New("client: status reply of an unknown version")
)

// msgSuccess is SSH_AGENT_SUCCESS, the first byte of an extension reply
// with content.
const msgSuccess = 6

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

// Status is a snapshot of the agent's state, as reported by the
// status@icn-agent extension (and by agentsrv's Server.Status).
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

// MarshalStatus encodes st as a status@icn-agent reply, message type byte
// included: what the agent sends, and what a fake agent in a test can
// send.
func MarshalStatus(st *Status) []byte {
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

// ParseStatus decodes a status@icn-agent reply, message type byte
// included. A reply of a version it cannot read gives an error wrapping
// ErrStatusVersion; every other error wraps ErrMalformedStatus.
func ParseStatus(reply []byte) (*Status, error) {
	if len(reply) >= 5 && reply[0] == msgSuccess {
		// Check the version before the layout, so that a newer agent
		// gets a clear error rather than a parse failure.
		if v := uint32(reply[1])<<24 | uint32(reply[2])<<16 | uint32(reply[3])<<8 | uint32(reply[4]); v != 1 && v != StatusVersion {
			return nil, fmt.Errorf("%w: version %d; this client reads versions 1 and %d", ErrStatusVersion, v, StatusVersion)
		}
	}
	var w statusReply
	if err := ssh.Unmarshal(reply, &w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedStatus, err)
	}
	st := &Status{Locked: w.Locked, SoftwareKeys: int(w.SoftwareKeys)}
	rest := w.Records
	for i := uint32(0); i < w.Identities; i++ {
		var rec struct {
			Record []byte
			Rest   []byte `ssh:"rest"`
		}
		if err := ssh.Unmarshal(rest, &rec); err != nil {
			return nil, fmt.Errorf("%w: identity %d: %w", ErrMalformedStatus, i, err)
		}
		rest = rec.Rest
		var r identityRecord
		if err := ssh.Unmarshal(rec.Record, &r); err != nil {
			return nil, fmt.Errorf("%w: identity %d: %w", ErrMalformedStatus, i, err)
		}
		pub, err := ssh.ParsePublicKey(r.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: identity %q: %w", ErrMalformedStatus, r.Name, err)
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
				return nil, fmt.Errorf("%w: identity %q certificate: %w", ErrMalformedStatus, r.Name, err)
			}
			cert, ok := k.(*ssh.Certificate)
			if !ok {
				return nil, fmt.Errorf("%w: identity %q: certificate field holds a %s key", ErrMalformedStatus, r.Name, k.Type())
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
			return nil, fmt.Errorf("%w: lockout: %w", ErrMalformedStatus, err)
		}
		if tr.Known {
			st.Lockout = &LockoutStatus{Counter: tr.Counter, Max: tr.Max}
		}
		rest = tr.Rest
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformedStatus)
	}
	return st, nil
}

// parseQuery decodes a reply to query, message type byte included.
func parseQuery(reply []byte) ([]string, error) {
	if len(reply) == 0 || reply[0] != msgSuccess {
		return nil, errors.New("client: malformed query reply")
	}
	var names []string
	rest := reply[1:]
	for len(rest) > 0 {
		var n struct {
			Name string
			Rest []byte `ssh:"rest"`
		}
		if err := ssh.Unmarshal(rest, &n); err != nil {
			return nil, fmt.Errorf("client: malformed query reply: %w", err)
		}
		names = append(names, n.Name)
		rest = n.Rest
	}
	return names, nil
}
