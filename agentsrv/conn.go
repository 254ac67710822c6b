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

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"
)

// conn is the agent one client connection talks to. Server-wide state
// lives in the Server; what is private to the connection (session
// bindings) lives here.
type conn struct {
	s   *Server
	ctx context.Context
	log *slog.Logger

	mu       sync.Mutex
	bindings []sessionBinding
}

var _ agent.ExtendedAgent = (*conn)(nil)

// errTooLarge closes a connection that sent an oversized request.
var errTooLarge = errors.New("agentsrv: request too large")

// serveConn checks the peer, then serves c until it ends.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
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
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	log.Debug("agentsrv: connection opened")
	pc := &conn{s: s, ctx: ctx, log: log}
	rw := struct {
		io.Reader
		io.Writer
	}{&frameLimiter{r: c, max: s.maxMessage}, c}
	err := agent.ServeAgent(pc, rw)
	switch {
	case errors.Is(err, errTooLarge):
		log.Warn("agentsrv: closing connection after an oversized request", "err", err, "max", s.maxMessage)
	case err == nil, errors.Is(err, io.EOF), ctx.Err() != nil, errors.Is(err, net.ErrClosed):
		log.Debug("agentsrv: connection closed")
	default:
		log.Debug("agentsrv: connection ended", "err", err)
	}
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

// frameLimiter passes through a stream of agent requests (uint32 length,
// then that many bytes) and fails, before the body is read, at the first
// request longer than max. The error is sticky.
type frameLimiter struct {
	r    io.Reader
	max  uint32
	hdr  [4]byte
	hdrN int    // header bytes seen of the current request
	body uint32 // body bytes still to come of the current request
	err  error
}

func (f *frameLimiter) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.body > 0 {
		if uint64(len(p)) > uint64(f.body) {
			p = p[:f.body]
		}
		n, err := f.r.Read(p)
		f.body -= uint32(n)
		return n, err
	}
	// Between requests: read no further than the end of the header.
	if len(p) > 4-f.hdrN {
		p = p[:4-f.hdrN]
	}
	n, err := f.r.Read(p)
	copy(f.hdr[f.hdrN:], p[:n])
	f.hdrN += n
	if f.hdrN < 4 {
		return n, err
	}
	f.hdrN = 0
	size := binary.BigEndian.Uint32(f.hdr[:])
	if size > f.max {
		// Withhold the last header bytes so that the reader sees the
		// error rather than a length it would allocate for.
		f.err = fmt.Errorf("%w: %d bytes, limit %d", errTooLarge, size, f.max)
		return 0, f.err
	}
	f.body = size
	return n, err
}

// debug logs a request at Debug level.
func (c *conn) debug(msg string, attrs ...slog.Attr) {
	c.log.LogAttrs(c.ctx, slog.LevelDebug, msg, attrs...)
}

// debugEnabled guards Debug logs on the signing path, where building the
// attributes of a disabled log would cost an allocation.
func (c *conn) debugEnabled() bool { return c.log.Enabled(c.ctx, slog.LevelDebug) }

// List returns the sealed identities (each followed by its certificate,
// if it has one) that ssh-add -d has not hidden, then the software keys.
// It is empty while the agent is locked.
func (c *conn) List() ([]*agent.Key, error) {
	s := c.s
	s.mu.Lock()
	s.expireSoftLocked(s.wallNow())
	s.mu.Unlock()

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.locked {
		c.debug("agentsrv: list while locked")
		return nil, nil
	}
	keys := make([]*agent.Key, 0, 2*len(s.sealed)+len(s.soft))
	for _, e := range s.sealed {
		if e.hidden {
			continue
		}
		keys = append(keys, &agent.Key{Format: ssh.KeyAlgoED25519, Blob: e.pubWire, Comment: e.comment})
		if e.cert != nil {
			keys = append(keys, &agent.Key{Format: e.cert.Type(), Blob: e.certWire, Comment: e.comment})
		}
	}
	for _, k := range s.soft {
		keys = append(keys, &agent.Key{Format: k.signer.PublicKey().Type(), Blob: k.wire, Comment: k.comment})
	}
	c.debug("agentsrv: list", slog.Int("keys", len(keys)))
	return keys, nil
}

// Sign signs data with key.
func (c *conn) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return c.SignWithFlags(key, data, 0)
}

// SignWithFlags signs data with key: a sealed identity (unsealed first if
// its seed is not cached), its certificate, or a software key. Flags
// select RSA SHA-2 signatures for software RSA keys and are ignored for
// Ed25519.
func (c *conn) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	sig, sealed, err := c.signWithFlags(key, data, flags)
	if err != nil {
		c.s.metrics.SignFailed(sealed, err)
	} else {
		c.s.metrics.Signed(sealed)
	}
	return sig, err
}

// signWithFlags is SignWithFlags; it also reports whether key is a
// sealed identity's.
func (c *conn) signWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (_ *ssh.Signature, sealed bool, _ error) {
	s := c.s
	wire := key.Marshal()
	var acceptGen uint64
	for attempt := 0; ; attempt++ {
		s.mu.RLock()
		if s.locked {
			s.mu.RUnlock()
			return nil, false, ErrLocked
		}
		ref, ok := s.byKey[string(wire)]
		if !ok || (ref.sealed != nil && ref.sealed.hidden) {
			s.mu.RUnlock()
			return nil, ref.sealed != nil, ErrNotFound
		}
		if k := ref.soft; k != nil {
			expired := !k.expire.IsZero() && !s.wallNow().Before(k.expire)
			s.mu.RUnlock()
			if expired {
				s.removeSoftKey(k, "lifetime expired")
				return nil, false, ErrNotFound
			}
			c.debug("agentsrv: sign", slog.String("fingerprint", k.fp), slog.String("backend", "software"))
			sig, err := s.signSoft(c.ctx, k, data, flags)
			return sig, false, err
		}
		e := ref.sealed
		sig, ok := e.trySign(s.wallNow(), data, acceptGen)
		s.mu.RUnlock()
		if ok {
			if c.debugEnabled() {
				c.log.LogAttrs(c.ctx, slog.LevelDebug, "agentsrv: sign", slog.String("name", e.name), slog.String("fingerprint", e.fp))
			}
			return sig, true, nil
		}
		if attempt >= 3 {
			return nil, true, fmt.Errorf("agentsrv: identity %s: seed dropped before it could be used", e.name)
		}
		c.debug("agentsrv: sign needs an unseal", slog.String("name", e.name), slog.String("fingerprint", e.fp))
		gen, err := s.unseal(c.ctx, e, s.autoLock(), false)
		if err != nil {
			return nil, true, err
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
func (c *conn) Remove(key ssh.PublicKey) error {
	s := c.s
	wire := key.Marshal()
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
		k.stopTimer()
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
