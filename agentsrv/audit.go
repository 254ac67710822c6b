package agentsrv

import (
	"crypto/sha256"
	"errors"
	"time"

	"golang.org/x/crypto/ssh"
)

// Kinds of key in SignEvent.Backend.
const (
	KindSealed   = "sealed"
	KindSoftware = "software"
	// KindUpstream is a key an upstream agent holds (Config.Upstreams):
	// the request was forwarded.
	KindUpstream = "upstream"
)

// Outcome of a SignEvent that signed.
const OutcomeSigned = "signed"

// Peer is the process at the other end of a connection, as the kernel
// recorded it when it connected (SO_PEERCRED) and /proc described it at
// accept time. Exe and Cmdline are for people, not for access decisions:
// the process may have exec'ed something else since.
type Peer struct {
	// Known is false for connections that are not unix sockets (tests,
	// in-process callers): the other fields are then zero.
	Known    bool
	UID, PID int
	Exe      string
	Cmdline  string
}

// String describes the peer for people: "ssh host (pid 4242, uid 1000)".
func (p Peer) String() string {
	if !p.Known {
		return "unknown process"
	}
	name := p.Cmdline
	if name == "" {
		name = p.Exe
	}
	if name == "" {
		name = "unknown process"
	}
	return name + " (pid " + itoa(p.PID) + ", uid " + itoa(p.UID) + ")"
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// Destination is where an SSH client says it is authenticating, from the
// connection's last session-bind@openssh.com: the host key's
// fingerprint and, when the user's known_hosts has that key, the host's
// name (Config.KnownHost). Zero when the client sent no session-bind
// (ssh-keygen -Y sign, git, OpenSSH before 8.9).
type Destination struct {
	HostKey string // SHA256 fingerprint
	Host    string // from known_hosts; may be empty
	// Forwarding is true when the binding was for a forwarded agent
	// (ssh -A): the signature is then requested from a remote host.
	Forwarding bool
}

// String is "host (SHA256:...)", the fingerprint alone, or "".
func (d Destination) String() string {
	switch {
	case d.HostKey == "":
		return ""
	case d.Host == "":
		return d.HostKey
	}
	return d.Host + " (" + d.HostKey + ")"
}

// SignEvent describes one sign request: a signature made or refused.
type SignEvent struct {
	Time time.Time
	// Key is the SHA256 fingerprint of the key asked for; Name the
	// sealed identity's name or the software key's comment (empty for a
	// key the agent does not have).
	Key, Name string
	// Backend is KindSealed or KindSoftware; empty for a key the
	// agent does not have.
	Backend string
	Peer    Peer
	Dest    Destination
	// DataSHA256 is the SHA-256 of the data to sign. The data itself is
	// never passed on.
	DataSHA256 [sha256.Size]byte
	// Outcome is OutcomeSigned, or why the signature was refused: the
	// text of Err without the package prefix.
	Outcome string
	// Err is nil when signed, else the refusal.
	Err error
}

// Auditor receives an event for every sign request, signed or refused,
// for sealed identities and software keys alike (the daemon's
// implementation appends them to the audit log). Audit is called on the
// request path, from many goroutines at once, after the signature is made
// and before the reply is sent: it must be safe for concurrent use and
// fast (queue the event, do not write it out there). ev is valid only
// during the call: keep a copy, not the pointer.
type Auditor interface {
	Audit(ev *SignEvent)
}

// Notifier announces signatures made with the sealed identities that
// have Identity.Notify set. Like Auditor.Audit, Notify is called on the
// request path and must not block: queue, or drop. ev is valid only
// during the call.
type Notifier interface {
	Notify(ev *SignEvent)
}

// signedKey is what the sign path reports of the key it used or refused,
// for events. Its strings are the key's own: filling it allocates
// nothing.
type signedKey struct {
	fp, name, backend string
	sealed            *sealed // nil for software and unknown keys
	notify            bool    // the sealed identity's Notify
}

// report tells the Auditor and, for a signature with a sealed identity
// that notifies, the Notifier about one sign request. It does nothing,
// and costs nothing, when neither is configured.
//
// ev is where the event is built: the connection's own (appendSign, on
// the request loop), or nil for a fresh one, made only when needed
// (callers in the process, which may share a connection between
// goroutines).
func (c *conn) report(ev *SignEvent, k *signedKey, wire, data []byte, err error) {
	s := c.s
	info := c.connInfo()
	if err == nil && k.sealed != nil {
		k.sealed.noteUse(info, s.wallNow())
	}
	notify := err == nil && k.notify && s.notifier != nil
	if s.auditor == nil && !notify {
		return
	}
	if ev == nil {
		ev = new(SignEvent)
	}
	*ev = SignEvent{
		Time:    s.wallNow(),
		Key:     k.fp,
		Name:    k.name,
		Backend: k.backend,
		Peer:    info.peer,
		Dest:    info.dest,
		Outcome: OutcomeSigned,
		Err:     err,
	}
	if ev.Key == "" {
		if pub, perr := ssh.ParsePublicKey(wire); perr == nil {
			ev.Key = ssh.FingerprintSHA256(pub)
		}
	}
	if err != nil {
		ev.Outcome = outcome(err)
	}
	ev.DataSHA256 = sha256.Sum256(data)
	if s.auditor != nil {
		s.auditor.Audit(ev)
	}
	if notify {
		s.notifier.Notify(ev)
	}
	*ev = SignEvent{}
}

// outcome is the refusal reason an event records: short words for the
// common cases, else the error's text.
func outcome(err error) string {
	switch {
	case errors.Is(err, ErrLocked):
		return "refused: agent locked"
	case errors.Is(err, ErrNotFound):
		return "refused: unknown key"
	case errors.Is(err, ErrNotConfirmed):
		return "refused: not confirmed"
	}
	return "refused: " + err.Error()
}
