package agentsrv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/edlocked"
	"github.com/icn/icn-agent/internal/secmem"
)

// conn is one client connection: its request loop, its buffers, and what
// is private to it (session bindings). Server-wide state lives in the
// Server.
//
// Requests are read into buf, a locked secmem buffer the connection owns
// and reuses, and parsed in place (see parseRequest): a lock passphrase,
// an unlock guess, an added private key or an extension's PIN never
// reaches the Go heap on its way in. The bytes of each request are wiped
// as soon as it has been answered, and the buffer is destroyed (wiped and
// unmapped) when it is replaced by a larger one and when the connection
// ends.
type conn struct {
	s   *Server
	ctx context.Context
	log *slog.Logger
	nc  net.Conn

	buf      *secmem.Buffer // request bytes; nil until the first read
	n        int            // bytes of buf holding data not yet answered
	deadline bool           // a read deadline is set (a request is half read)
	out      []byte         // the reply frame; replies carry no secrets
	sig      [ed25519.SignatureSize]byte
	ev       SignEvent // the event report hands on, reused

	// State for the connection table (see Server.admit). idle is set
	// while the loop waits for the first byte of a request; an evictor
	// takes the connection by swapping it to false first, so that a
	// connection that has started a request is never evicted.
	idle     atomic.Bool
	evicted  atomic.Bool
	lastUsed atomic.Int64 // Server.mono() at the last request (or accept)

	// info is the peer and its destination (see connInfo); nil for a
	// peer that is not on a unix socket.
	info atomic.Pointer[connInfo]

	mu       sync.Mutex
	bindings []sessionBinding
	// bindTried is set by any session-bind request: after one that
	// failed, with no binding, destination-constrained keys are unusable.
	bindTried bool
}

var _ agent.ExtendedAgent = (*conn)(nil)

// Errors that end a connection.
var (
	// errTooLarge closes a connection that sent an oversized request.
	errTooLarge = errors.New("agentsrv: request too large")
	// errEmptyRequest closes a connection that sent a zero-length
	// request, as x/crypto's agent does.
	errEmptyRequest = errors.New("agentsrv: empty request")
	// errEvicted ends a connection closed to make room for another.
	errEvicted = errors.New("agentsrv: idle connection closed to make room")
)

// reqBufSize is the initial size of a connection's request buffer, one
// page, like OpenSSH's AGENT_RBUF_LEN: every request but large adds and
// signatures of large data fits.
const reqBufSize = 4096

// serveConn checks the peer, then serves c until it ends. It runs inside
// edlocked.Deep, so that the runtime never shrinks (copies, then frees
// unwiped) the goroutine's stack while a request's secrets are on it.
func (s *Server) serveConn(ctx context.Context, pc *conn) {
	edlocked.Deep(func() { s.serveConnDeep(ctx, pc) })
}

func (s *Server) serveConnDeep(ctx context.Context, pc *conn) {
	c := pc.nc
	defer s.release(pc)
	defer c.Close()
	log := s.log
	if uc, ok := c.(*net.UnixConn); ok {
		cred, err := peerCred(uc)
		if err != nil {
			s.log.Warn("agentsrv: refusing connection: cannot read peer credentials", "err", err)
			return
		}
		log = s.log.With("uid", cred.Uid, "pid", cred.Pid)
		if !s.allowUID(cred.Uid) {
			log.Warn("agentsrv: refusing connection from a disallowed uid")
			return
		}
		pc.info.Store(&connInfo{peer: lookupPeer(int(cred.Uid), int(cred.Pid))})
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	log.Debug("agentsrv: connection opened")
	pc.ctx, pc.log = ctx, log
	err := pc.serve()
	pc.buf.Destroy()
	pc.buf, pc.n = nil, 0
	switch {
	case errors.Is(err, errTooLarge):
		log.Warn("agentsrv: closing connection after an oversized request", "err", err, "max", s.maxMessage)
	case errors.Is(err, os.ErrDeadlineExceeded):
		log.Info("agentsrv: closing connection that left a request unfinished", "timeout", s.requestTimeout)
	case pc.evicted.Load():
		log.Debug("agentsrv: idle connection closed to make room")
	case err == nil, errors.Is(err, io.EOF), ctx.Err() != nil, errors.Is(err, net.ErrClosed):
		log.Debug("agentsrv: connection closed")
	default:
		log.Debug("agentsrv: connection ended", "err", err)
	}
}

// serve reads, answers and wipes requests until the connection fails.
func (c *conn) serve() error {
	for {
		if err := c.fill(4); err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(c.buf.Bytes())
		switch {
		case size == 0:
			return errEmptyRequest
		case size > c.s.maxMessage:
			return fmt.Errorf("%w: %d bytes, limit %d", errTooLarge, size, c.s.maxMessage)
		}
		frame := 4 + int(size)
		if err := c.fill(frame); err != nil {
			return err
		}
		if c.deadline {
			c.nc.SetReadDeadline(time.Time{})
			c.deadline = false
		}
		c.lastUsed.Store(c.s.mono())

		c.out = append(c.out[:0], 0, 0, 0, 0)
		c.out = c.handle(c.out, c.buf.Bytes()[4:frame])
		binary.BigEndian.PutUint32(c.out, uint32(len(c.out)-4))

		// Wipe the request, keep what follows it (a client may send its
		// next request before reading this reply), and go back to the
		// small buffer after a large request.
		b := c.buf.Bytes()
		copy(b, b[frame:c.n])
		c.n -= frame
		secmem.Wipe(b[c.n:min(c.n+frame, len(b))])
		if len(b) > reqBufSize && c.n <= reqBufSize {
			if err := c.resize(reqBufSize); err != nil {
				return err
			}
		}
		// Idle from here if nothing of the next request is in: a
		// connection is evictable as soon as its request is answered.
		if c.n == 0 {
			c.idle.Store(true)
		}
		if _, err := c.nc.Write(c.out); err != nil {
			return err
		}
	}
}

// fill reads until buf holds at least n bytes, growing it if needed.
// While nothing of a request has arrived the connection is idle (it may
// be evicted); once part of one has, the rest must follow within
// Config.RequestTimeout.
func (c *conn) fill(n int) error {
	if c.buf.Len() < n {
		size := max(reqBufSize, (n+reqBufSize-1)/reqBufSize*reqBufSize)
		if err := c.resize(size); err != nil {
			return err
		}
	}
	b := c.buf.Bytes()
	for c.n < n {
		if c.n == 0 {
			// Already idle, or evicted and out of the table; either way
			// the connection belongs to whoever holds idle.
			c.idle.Store(true)
		} else if !c.deadline && c.s.requestTimeout > 0 {
			c.nc.SetReadDeadline(time.Now().Add(c.s.requestTimeout))
			c.deadline = true
		}
		m, err := c.nc.Read(b[c.n:])
		if c.n == 0 && !c.idle.CompareAndSwap(true, false) {
			// An evictor took the connection while it was idle.
			return errEvicted
		}
		c.n += m
		if err != nil {
			if c.n > 0 && errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// resize replaces buf with a locked buffer of size bytes, moving the
// unanswered bytes over, and destroys the old one.
func (c *conn) resize(size int) error {
	nb, err := secmem.New(size)
	if err != nil {
		return fmt.Errorf("agentsrv: request buffer: %w", err)
	}
	if !nb.Locked() {
		c.s.warnUnlocked.Do(func() {
			c.s.log.Warn("agentsrv: request buffers are not locked in memory (RLIMIT_MEMLOCK); secrets in requests may be swapped out")
		})
	}
	if c.buf != nil {
		copy(nb.Bytes(), c.buf.Bytes()[:c.n])
		c.buf.Destroy()
	}
	c.buf = nb
	return nil
}

// handle answers one request (body: type byte and content), appending
// the reply to out.
func (c *conn) handle(out, body []byte) []byte {
	req, err := parseRequest(body)
	if c.s.hasUpstreams() {
		if out, ok := c.routeUpstream(out, body, &req, err); ok {
			return out
		}
	}
	if err != nil {
		c.debug("agentsrv: request refused", slog.Int("type", int(body[0])), slog.Any("err", err))
		return append(out, msgFailure)
	}
	switch req.typ {
	case msgRequestIdentities:
		countAt := len(out) + 1
		out = c.appendList(out)
		if c.s.hasUpstreams() {
			out = c.appendUpstreamList(out, countAt)
		}
		return out
	case msgSignRequest:
		var ok bool
		if out, ok = c.appendSign(out, req.key, req.data, agent.SignatureFlags(req.flags)); ok {
			return out
		}
		return append(out, msgFailure)
	case msgAddIdentity, msgAddIDConstrained:
		if req.add.lifetime == 0 {
			req.add.lifetime = c.s.defaultLifetime
		}
		err = c.s.addParsed(&req.add)
		// Building an RSA or ECDSA key computes with its private
		// values in stack frames: clear them.
		edlocked.Scrub()
		if err != nil {
			c.log.Info("agentsrv: add refused", "err", err)
		}
	case msgRemoveIdentity:
		err = c.remove(req.key)
	case msgRemoveAll:
		if err = c.RemoveAll(); err == nil && c.s.hasUpstreams() {
			c.forwardAll(body)
		}
	case msgLock:
		if err = c.s.lock(req.pass); err == nil && c.s.hasUpstreams() {
			c.forwardAll(body)
		}
	case msgUnlock:
		if err = c.s.unlock(c.ctx, req.pass); err == nil && c.s.hasUpstreams() {
			c.forwardAll(body)
		}
	case msgExtension:
		reply, err := c.Extension(string(req.extName), req.extContents)
		switch {
		case errors.Is(err, agent.ErrExtensionUnsupported):
			return append(out, msgFailure)
		case err != nil:
			c.debug("agentsrv: extension failed", slog.String("type", string(req.extName)), slog.Any("err", err))
			return append(out, msgExtensionFailure)
		case len(reply) == 0:
			return append(out, msgSuccess)
		}
		return append(out, reply...)
	default:
		c.debug("agentsrv: unsupported request", slog.Int("type", int(req.typ)))
		return append(out, msgFailure)
	}
	if err != nil {
		c.debug("agentsrv: request failed", slog.Int("type", int(req.typ)), slog.Any("err", err))
		return append(out, msgFailure)
	}
	return append(out, msgSuccess)
}

// peerCred returns the credentials of the process at the other end of a
// unix socket, as recorded by the kernel when it connected.
func peerCred(uc *net.UnixConn) (*unix.Ucred, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred, nil
}

// debug logs a request at Debug level.
func (c *conn) debug(msg string, attrs ...slog.Attr) {
	c.log.LogAttrs(c.ctx, slog.LevelDebug, msg, attrs...)
}

// debugEnabled guards Debug logs on the signing path, where building the
// attributes of a disabled log would cost an allocation.
func (c *conn) debugEnabled() bool { return c.log.Enabled(c.ctx, slog.LevelDebug) }

// listedLocked calls f for each listed key, in List order: the sealed
// identities ssh-add -d has not hidden (each followed by its certificate,
// if it has one), then the software keys. s.mu must be held.
func (s *Server) listedLocked(permit func([]destConstraint) bool, f func(blob []byte, comment string)) {
	for _, e := range s.sealed {
		if e.hidden || (e.dest != nil && !permit(e.dest)) {
			continue
		}
		f(e.pubWire, e.comment)
		if e.cert != nil {
			f(e.certWire, e.comment)
		}
	}
	for _, k := range s.soft {
		if k.dest != nil && !permit(k.dest) {
			continue
		}
		f(k.wire, k.comment)
	}
}

// appendList appends SSH_AGENT_IDENTITIES_ANSWER: nothing while the agent
// is locked.
func (c *conn) appendList(out []byte) []byte {
	s := c.s
	permit := c.listPermitter()
	s.expireSoftIfDue()

	s.mu.RLock()
	defer s.mu.RUnlock()
	out = append(out, msgIdentitiesAnswer)
	if s.locked {
		c.debug("agentsrv: list while locked")
		return appendUint32(out, 0)
	}
	countAt := len(out)
	out = appendUint32(out, 0)
	n := 0
	s.listedLocked(permit, func(blob []byte, comment string) {
		out = appendString(out, blob)
		out = appendUint32(out, uint32(len(comment)))
		out = append(out, comment...)
		n++
	})
	binary.BigEndian.PutUint32(out[countAt:], uint32(n))
	c.debug("agentsrv: list", slog.Int("keys", n))
	return out
}

// List returns the keys appendList lists.
func (c *conn) List() ([]*agent.Key, error) {
	s := c.s
	permit := c.listPermitter()
	s.expireSoftIfDue()

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.locked {
		return nil, nil
	}
	var keys []*agent.Key
	s.listedLocked(permit, func(blob []byte, comment string) {
		var k struct {
			Format string
			Rest   []byte `ssh:"rest"`
		}
		ssh.Unmarshal(blob, &k)
		keys = append(keys, &agent.Key{Format: k.Format, Blob: blob, Comment: comment})
	})
	return keys, nil
}

// appendSign appends SSH_AGENT_SIGN_RESPONSE with the signature of data
// by the key whose wire blob is key, and reports whether it signed. A
// warm signature with a sealed identity allocates nothing: it is written
// to c.sig, then into out.
func (c *conn) appendSign(out, key, data []byte, flags agent.SignatureFlags) ([]byte, bool) {
	var k signedKey
	sig, err := c.sign(key, data, flags, &c.sig, &k)
	c.report(&c.ev, &k, key, data, err)
	if err != nil {
		c.s.metrics.SignFailed(k.sealed != nil, err)
		c.debug("agentsrv: sign failed", slog.Any("err", err))
		return out, false
	}
	c.s.metrics.Signed(k.sealed != nil)
	if sig == nil {
		return appendSignResponse(out, ssh.KeyAlgoED25519, c.sig[:], nil), true
	}
	return appendSignResponse(out, sig.Format, sig.Blob, sig.Rest), true
}

// Sign signs data with key.
func (c *conn) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return c.SignWithFlags(key, data, 0)
}

// SignWithFlags is the request path of appendSign, for callers in the
// process (the quote extension, tests).
func (c *conn) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	b := new(sigBox)
	var k signedKey
	wire := key.Marshal()
	sig, err := c.sign(wire, data, flags, &b.blob, &k)
	c.report(nil, &k, wire, data, err)
	if err != nil {
		c.s.metrics.SignFailed(k.sealed != nil, err)
		return nil, err
	}
	c.s.metrics.Signed(k.sealed != nil)
	if sig == nil {
		b.sig = ssh.Signature{Format: ssh.KeyAlgoED25519, Blob: b.blob[:]}
		sig = &b.sig
	}
	return sig, nil
}

// sign signs data with the key whose wire blob is wire: a sealed
// identity (unsealed first if its seed is not cached), its certificate,
// or a software key. A sealed identity's signature is written to dst and
// sig is nil; a software key's is returned. Flags select RSA SHA-2
// signatures for software RSA keys and are ignored for Ed25519. It fills
// k with the key it found, if any, for events. Destination constraints
// are checked, and a sealed identity that needs confirmation
// (Identity.Confirm, or icn-agent add -c) confirmed, once per signature,
// before any unseal.
func (c *conn) sign(wire, data []byte, flags agent.SignatureFlags, dst *[ed25519.SignatureSize]byte, k *signedKey) (sig *ssh.Signature, _ error) {
	s := c.s
	var acceptGen uint64
	checked := false // destination and confirmation, once per signature
	for attempt := 0; ; attempt++ {
		s.mu.RLock()
		if s.locked {
			s.mu.RUnlock()
			return nil, ErrLocked
		}
		ref, ok := s.byKey[string(wire)]
		if e := ref.sealed; ok && e != nil && e.hidden {
			*k = signedKey{fp: e.fp, name: e.name, backend: KindSealed, sealed: e}
			ok = false
		}
		if !ok {
			s.mu.RUnlock()
			return nil, ErrNotFound
		}
		if sk := ref.soft; sk != nil {
			expired := !sk.expire.IsZero() && !s.wallNow().Before(sk.expire)
			*k = signedKey{fp: sk.fp, name: sk.comment, backend: KindSoftware}
			s.mu.RUnlock()
			if expired {
				s.removeSoftKey(sk, "lifetime expired")
				return nil, ErrNotFound
			}
			if sk.dest != nil {
				if err := c.checkDestination(sk.dest, wire, sk.typ, data); err != nil {
					return nil, err
				}
			}
			c.debug("agentsrv: sign", slog.String("fingerprint", sk.fp), slog.String("backend", "software"))
			sig, err := s.signSoft(c.ctx, c.connInfo(), sk, data, flags)
			// RSA and ECDSA signing leave private intermediates (CRT
			// values, the nonce) in the frames below: clear them.
			edlocked.Scrub()
			return sig, err
		}
		e := ref.sealed
		*k = signedKey{fp: e.fp, name: e.name, backend: KindSealed, sealed: e, notify: e.notify}
		if (e.confirm || e.addConfirm || e.dest != nil) && !checked {
			dest, ask := e.dest, e.confirm || e.addConfirm
			s.mu.RUnlock()
			if dest != nil {
				typ := ssh.KeyAlgoED25519
				if !bytes.Equal(wire, e.pubWire) {
					typ = ssh.CertAlgoED25519v01
				}
				if err := c.checkDestination(dest, wire, typ, data); err != nil {
					return nil, err
				}
			}
			if ask {
				prompt := confirmPrompt("icn-agent identity "+e.name, e.fp, c.connInfo())
				if err := s.askConfirm(c.ctx, e.fp, prompt); err != nil {
					return nil, err
				}
			}
			checked = true
			continue
		}
		ok = e.trySignInto(s.wallNow(), data, acceptGen, dst)
		s.mu.RUnlock()
		if ok {
			if c.debugEnabled() {
				c.log.LogAttrs(c.ctx, slog.LevelDebug, "agentsrv: sign", slog.String("name", e.name), slog.String("fingerprint", e.fp))
			}
			return nil, nil
		}
		if attempt >= 3 {
			return nil, fmt.Errorf("agentsrv: identity %s: seed dropped before it could be used", e.name)
		}
		c.debug("agentsrv: sign needs an unseal", slog.String("name", e.name), slog.String("fingerprint", e.fp))
		gen, err := s.unseal(c.ctx, e, s.autoLock(), false, nil)
		if err != nil {
			return nil, err
		}
		acceptGen = gen
	}
}

// Add adds a software key (ssh-add FILE). Lifetime constraints are
// honoured; the confirm constraint needs Config.AskPass; any constraint
// extension is refused, as is a copy of a sealed identity's key.
func (c *conn) Add(key agent.AddedKey) error {
	err := c.s.addSoft(key)
	if err != nil {
		c.log.Info("agentsrv: add refused", "err", err)
	}
	return err
}

// Remove deletes a software key, or hides a sealed identity (zeroizing
// its cached seed) until Restore, the unseal extension or a new blob.
func (c *conn) Remove(key ssh.PublicKey) error { return c.remove(key.Marshal()) }

// remove is Remove, by the key's wire blob.
func (c *conn) remove(wire []byte) error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked {
		return ErrLocked
	}
	ref, ok := s.byKey[string(wire)]
	switch {
	case !ok:
		return ErrNotFound
	case ref.soft != nil:
		s.removeSoftLocked(ref.soft, "removed by client")
	case ref.sealed.hidden:
		return ErrNotFound
	default:
		e := ref.sealed
		e.hidden = true
		e.drop()
		s.log.Info("agentsrv: sealed identity hidden by client", "name", e.name, "fingerprint", e.fp)
	}
	return nil
}

// RemoveAll deletes every software key and hides every sealed identity,
// zeroizing its seed.
func (c *conn) RemoveAll() error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked {
		return ErrLocked
	}
	for _, k := range s.soft {
		k.destroy()
	}
	n := len(s.soft)
	s.soft = nil
	for _, e := range s.sealed {
		e.hidden = true
		e.drop()
	}
	s.rebuildKeysLocked()
	s.log.Info("agentsrv: all identities removed by client", "software_keys", n, "sealed_hidden", len(s.sealed))
	return nil
}

// Lock locks the agent; see Server.lock.
func (c *conn) Lock(passphrase []byte) error { return c.s.lock(passphrase) }

// Unlock unlocks the agent; see Server.unlock.
func (c *conn) Unlock(passphrase []byte) error { return c.s.unlock(c.ctx, passphrase) }

// Signers is not supported: the agent never hands out its keys, even
// in-process.
func (c *conn) Signers() ([]ssh.Signer, error) {
	return nil, errors.New("agentsrv: Signers is not supported")
}
