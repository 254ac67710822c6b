package agentsrv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
)

// Upstream agents.
//
// A server configured with Config.Upstreams lists the keys of those agents
// after its own and forwards to them, byte for byte, the requests that
// concern their keys: a signature with a key it does not hold, an add of
// a key type (or constraint) it cannot hold, the removal of a key it does
// not hold. remove-all, lock and unlock go to every upstream after the
// server's own keys. Each forwarded request is a connection of its own,
// dialled with a short deadline; an upstream that fails is skipped for
// upstreamRetry, so that a dead or wedged upstream costs one request its
// deadline, not every request, and the server's own keys never wait for
// it.

// Deadlines for upstream agents: the dial, a request that needs no
// person (list, add, remove, lock), and a signature (a FIDO key may wait
// for a touch).
const (
	upstreamDial    = 500 * time.Millisecond
	upstreamRequest = 5 * time.Second
	upstreamSign    = 60 * time.Second
	// upstreamRetry is how long an upstream that failed is skipped.
	upstreamRetry = 10 * time.Second
	// upstreamMaxReply caps an upstream's reply.
	upstreamMaxReply = 1 << 20
)

// errUpstreamDown means an upstream is skipped after a recent failure.
var errUpstreamDown = errors.New("agentsrv: upstream agent skipped after a recent failure")

// upstream is one upstream agent and its health.
type upstream struct {
	path string
	log  *slog.Logger

	mu        sync.Mutex
	downUntil time.Time // skip until then
	warned    bool      // the current outage has been logged
}

func newUpstreams(paths []string, log *slog.Logger) []*upstream {
	var ups []*upstream
	for _, p := range paths {
		ups = append(ups, &upstream{path: p, log: log})
	}
	return ups
}

// roundTrip sends one request body (type byte and content) and returns
// the reply body.
func (u *upstream) roundTrip(ctx context.Context, body []byte, timeout time.Duration) ([]byte, error) {
	u.mu.Lock()
	if time.Now().Before(u.downUntil) {
		u.mu.Unlock()
		return nil, errUpstreamDown
	}
	u.mu.Unlock()
	reply, err := u.exchange(ctx, body, timeout)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		u.downUntil = time.Now().Add(upstreamRetry)
		if !u.warned {
			u.warned = true
			u.log.Warn("agentsrv: upstream agent unavailable; its keys are skipped", "upstream", u.path, "err", err)
		}
		return nil, err
	}
	if u.warned {
		u.warned = false
		u.log.Info("agentsrv: upstream agent available again", "upstream", u.path)
	}
	return reply, nil
}

func (u *upstream) exchange(ctx context.Context, body []byte, timeout time.Duration) ([]byte, error) {
	d := net.Dialer{Timeout: upstreamDial}
	nc, err := d.DialContext(ctx, "unix", u.path)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	nc.SetDeadline(time.Now().Add(timeout))
	// The frame may carry a private key (a forwarded add) or a lock
	// passphrase: wipe the copy once sent.
	frame := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(frame, uint32(len(body)))
	frame = append(frame, body...)
	_, err = nc.Write(frame)
	clear(frame)
	if err != nil {
		return nil, err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > upstreamMaxReply {
		return nil, fmt.Errorf("agentsrv: upstream reply of %d bytes", n)
	}
	reply := make([]byte, n)
	if _, err := io.ReadFull(nc, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// hasUpstreams reports whether the server forwards to upstream agents.
func (s *Server) hasUpstreams() bool { return len(s.upstreams) > 0 }

// holds reports whether wire is a key the server lists itself.
func (s *Server) holds(wire []byte) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ref, ok := s.byKey[string(wire)]
	return ok && (ref.sealed == nil || !ref.sealed.hidden)
}

// appendUpstreamList appends the keys of every upstream agent to a
// list reply whose key count is at out[countAt:], leaving out keys
// listed already.
func (c *conn) appendUpstreamList(out []byte, countAt int) []byte {
	s := c.s
	if s.isLocked() {
		return out
	}
	n := binary.BigEndian.Uint32(out[countAt:])
	seen := map[string]bool{}
	rest := cryptobyte.String(out[countAt+4:])
	for !rest.Empty() {
		var blob, comment []byte
		if !readString(&rest, &blob) || !readString(&rest, &comment) {
			break
		}
		seen[string(blob)] = true
	}
	for _, u := range s.upstreams {
		reply, err := u.roundTrip(c.ctx, []byte{msgRequestIdentities}, upstreamRequest)
		if err != nil {
			continue
		}
		r := cryptobyte.String(reply)
		var typ uint8
		var count uint32
		if !r.ReadUint8(&typ) || typ != msgIdentitiesAnswer || !r.ReadUint32(&count) {
			c.debug("agentsrv: upstream list refused", slog.String("upstream", u.path))
			continue
		}
		for range count {
			var blob, comment []byte
			if !readString(&r, &blob) || !readString(&r, &comment) {
				c.debug("agentsrv: upstream list malformed", slog.String("upstream", u.path))
				break
			}
			if seen[string(blob)] {
				continue
			}
			seen[string(blob)] = true
			out = appendString(out, blob)
			out = appendString(out, comment)
			n++
		}
	}
	binary.BigEndian.PutUint32(out[countAt:], n)
	return out
}

// forwardFirst sends body to each upstream in turn and appends the
// reply of the first that answers anything but failure; with none, it
// appends failure.
func (c *conn) forwardFirst(out, body []byte, timeout time.Duration) []byte {
	for _, u := range c.s.upstreams {
		reply, err := u.roundTrip(c.ctx, body, timeout)
		if err != nil || len(reply) == 0 || reply[0] == msgFailure {
			continue
		}
		c.debug("agentsrv: forwarded", slog.Int("type", int(body[0])), slog.String("upstream", u.path))
		return append(out, reply...)
	}
	return append(out, msgFailure)
}

// errUpstreamRefused is the refusal of a sign request no upstream agent
// answered with a signature.
var errUpstreamRefused = errors.New("no upstream agent signed")

// forwardAll sends body to every upstream, for remove-all, lock and
// unlock, whose own answer the server has given already.
func (c *conn) forwardAll(body []byte) {
	for _, u := range c.s.upstreams {
		reply, err := u.roundTrip(c.ctx, body, upstreamRequest)
		if err == nil && (len(reply) == 0 || reply[0] != msgSuccess) {
			c.debug("agentsrv: upstream refused", slog.Int("type", int(body[0])), slog.String("upstream", u.path))
		}
	}
}

// PKCS#11 requests (ssh-add -s, -e), which only an upstream can answer.
const (
	msgAddSmartcardKey            = 20
	msgRemoveSmartcardKey         = 21
	msgAddSmartcardKeyConstrained = 26
)

// holdableKeyTypes are the key types an add request may carry for the
// server to hold the key itself; see parseAdd.
var holdableKeyTypes = map[string]bool{
	ssh.KeyAlgoED25519: true, ssh.CertAlgoED25519v01: true,
	ssh.KeyAlgoRSA: true, ssh.CertAlgoRSAv01: true,
	ssh.KeyAlgoECDSA256: true, ssh.KeyAlgoECDSA384: true, ssh.KeyAlgoECDSA521: true,
	ssh.CertAlgoECDSA256v01: true, ssh.CertAlgoECDSA384v01: true, ssh.CertAlgoECDSA521v01: true,
}

// routeUpstream answers the requests that go to upstream agents: it
// reports whether it answered, appending the reply.
// req and parseErr are parseRequest's results for body.
func (c *conn) routeUpstream(out, body []byte, req *request, parseErr error) ([]byte, bool) {
	s := c.s
	switch body[0] {
	case msgSignRequest:
		if parseErr != nil || s.isLocked() || s.holds(req.key) {
			return out, false
		}
		n := len(out)
		out = c.forwardFirst(out, body, upstreamSign)
		// The audit log records forwarded signatures too.
		var err error
		if len(out) == n || out[n] != msgSignResponse {
			err = errUpstreamRefused
		}
		c.report(&c.ev, &signedKey{backend: KindUpstream}, req.key, req.data, err)
		return out, true
	case msgRemoveIdentity:
		if parseErr != nil || s.isLocked() || s.holds(req.key) {
			return out, false
		}
		return c.forwardFirst(out, body, upstreamRequest), true
	case msgAddSmartcardKey, msgRemoveSmartcardKey, msgAddSmartcardKeyConstrained:
		if s.isLocked() {
			return out, false
		}
		u := s.upstreams[0]
		reply, err := u.roundTrip(c.ctx, body, upstreamSign)
		if err != nil || len(reply) == 0 {
			return append(out, msgFailure), true
		}
		c.debug("agentsrv: PKCS#11 request forwarded", slog.Int("type", int(body[0])), slog.String("upstream", u.path))
		return append(out, reply...), true
	case msgAddIdentity, msgAddIDConstrained:
		if s.isLocked() {
			return out, false
		}
		var typ []byte
		t := cryptobyte.String(body[1:])
		if !readString(&t, &typ) {
			return out, false
		}
		foreign := !holdableKeyTypes[string(typ)]
		if parseErr == nil {
			foreign = foreign || req.add.unsupported != "" || (req.add.confirm && s.askPass == "")
		}
		if !foreign {
			return out, false
		}
		reply, err := s.upstreams[0].roundTrip(c.ctx, body, upstreamRequest)
		if err != nil || len(reply) == 0 {
			return append(out, msgFailure), true
		}
		c.debug("agentsrv: add forwarded", slog.String("key_type", string(typ)), slog.String("upstream", s.upstreams[0].path))
		return append(out, reply...), true
	}
	return out, false
}
