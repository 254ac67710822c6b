package agentsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
)

// Unsealer recovers the seed of a sealed identity. The daemon implements it
// with internal/unlock and its TPM; tests use a fake.
//
// Unseal writes the 32-byte Ed25519 seed sealed in b to dst (which is
// exactly 32 bytes of locked memory) or returns an error. It may be called
// from several goroutines at once, for different identities: implementations
// serialize their TPM access themselves. The server never calls it twice at
// the same time for the same identity. Errors name the identity (as
// sealstore's do); the server adds only what it was doing, "unseal".
type Unsealer interface {
	Unseal(ctx context.Context, b *sealstore.Blob, dst []byte) error
}

// DefaultMaxMessage is the default cap on the size of one agent request.
const DefaultMaxMessage = 256 << 10

// Defaults for the connection limits; see Config.MaxConns and
// Config.RequestTimeout.
const (
	DefaultMaxConns       = 256
	DefaultRequestTimeout = 10 * time.Second
)

// fdReserve is how many file descriptors the default connection cap
// leaves to the rest of the daemon (the TPM, the store, logs, a spare).
const fdReserve = 32

// burstInterval is how often a burst of refused or evicted connections is
// logged: once when it starts, then at most once per interval, with a
// count.
const burstInterval = 10 * time.Second

// sweepInterval is how often Serve looks for cached seeds past their
// expiry. Timers do the precise work; the sweep catches the case timers
// cannot: Go timers run on the monotonic clock, which stops while the
// machine is suspended, whereas expiry is a wall-clock deadline.
const sweepInterval = 10 * time.Second

// Config configures a Server. Only Unsealer is required.
type Config struct {
	// Unsealer recovers seeds from the TPM.
	Unsealer Unsealer
	// Attester answers the quote extension (attest.Extension); nil
	// answers it with failure.
	Attester Attester
	// Lockout reads the TPM's dictionary-attack counter and threshold
	// for status; nil leaves them out.
	Lockout func(ctx context.Context) (counter, max uint32, err error)
	// Logger receives the server's logs; nil means slog.Default(). Requests
	// are logged at Debug, refused peers and failures at Warn. Secrets
	// (seeds, passphrases, signed data) are never logged.
	Logger *slog.Logger
	// AutoLockTimeout is how long an unsealed seed stays cached, counted
	// from the unseal. Zero keeps it until lock, removal or DropAll.
	AutoLockTimeout time.Duration
	// MaxMessage caps the size of one request; a client sending a larger
	// one is disconnected. Zero means DefaultMaxMessage; at most 1 MiB
	// less 4 bytes (a request must fit in one locked buffer).
	MaxMessage int
	// AskPass is the path of an SSH_ASKPASS-style program used to confirm
	// each use of a key added with the confirm constraint (ssh-add -c). It
	// is run with the prompt as its only argument and SSH_ASKPASS_PROMPT=
	// confirm in its environment; exit status 0 allows the signature. Empty
	// means keys with the confirm constraint are refused.
	AskPass string
	// Now returns the current time; nil means time.Now. Expiry deadlines
	// are compared with it on every use.
	Now func() time.Time
	// AllowUID decides which peer uids may use the agent over a unix
	// socket. Nil allows the server's own uid and root.
	AllowUID func(uid uint32) bool
	// Sleep waits d or until ctx is done; it is how failed unlocks are
	// slowed down. Nil means a timer.
	Sleep func(ctx context.Context, d time.Duration)
	// MaxConns caps the connections served at once. When a new
	// connection would exceed it, the connection idle (between requests)
	// the longest is closed to make room; if none is idle, the new one is
	// refused. OpenSSH's agent serves as many as its file descriptor limit
	// allows; zero means DefaultMaxConns, lowered to leave 32 descriptors
	// of RLIMIT_NOFILE to the rest of the process.
	MaxConns int
	// RequestTimeout is how long a client may take to send the rest of a
	// request it has started; a connection still holding a partial
	// request then is closed. A connection idle between requests is kept,
	// as OpenSSH's agent keeps it (subject to MaxConns). Zero means
	// DefaultRequestTimeout; negative means no limit.
	RequestTimeout time.Duration
	// Metrics, if set, is told of every unseal, signature and PCR
	// change. If it also implements MetricsReporter, the server answers
	// the metrics@icn-agent extension with its report. Nil means none.
	Metrics Metrics
	// Audit, if set, is told of every sign request, signed or refused
	// (see Auditor). Nil means none.
	Audit Auditor
	// Notify, if set, is told of every signature made with an identity
	// whose Identity.Notify is set (see Notifier).
	Notify Notifier
	// KnownHost names the host whose key a client bound its session to
	// (session-bind@openssh.com), for prompts, events and status; p is
	// the client. It returns "" for an unknown key. Nil names none; the
	// daemon uses KnownHostsLookup.
	KnownHost func(key ssh.PublicKey, p Peer) string
	// DefaultLifetime, if positive, is the lifetime of a key added
	// without one (ssh-agent -t).
	DefaultLifetime time.Duration
	// Upstreams are the sockets of other agents whose keys are listed
	// after the server's own and to which requests for those keys, and
	// adds of key types the server cannot hold, are forwarded; see
	// upstream.go.
	Upstreams []string
}

// Metrics receives the server's events so that they can be counted. The
// daemon's implementation is internal/metrics. Its methods are called
// from many goroutines at once, on the request path: they must be safe
// for concurrent use, fast, and must not block.
type Metrics interface {
	// Unsealed reports one call of the Unsealer: its error (nil on
	// success) and how long it took.
	Unsealed(err error, d time.Duration)
	// Signed reports a signature made with a sealed identity (sealed)
	// or a software key.
	Signed(sealed bool)
	// SignFailed reports a sign request that failed, and why. sealed is
	// false for software keys and keys the agent does not have.
	SignFailed(sealed bool, err error)
	// PCRsChanged reports the PCRs that UpdatePCRs was told changed.
	PCRsChanged(changed []int)
}

// MetricsReporter is implemented by a Config.Metrics that can report its
// counters, for the metrics@icn-agent extension.
type MetricsReporter interface {
	// MetricsJSON returns the counters as a JSON object.
	MetricsJSON() ([]byte, error)
}

// noMetrics is the Metrics of a server configured without.
type noMetrics struct{}

func (noMetrics) Unsealed(error, time.Duration) {}
func (noMetrics) Signed(bool)                   {}
func (noMetrics) SignFailed(bool, error)        {}
func (noMetrics) PCRsChanged([]int)             {}

// Server is the agent: it holds the sealed identities, the seeds it has
// unsealed, the software keys added with ssh-add and the lock state, and
// serves them to up to Config.MaxConns connections. Its methods are safe
// for concurrent use.
//
// Lock order: lockMu, then mu, then a sealed identity's mu (or a software
// Ed25519 key's edSigner.mu), then conn.mu. cmu, which guards the
// connection table, is a leaf: nothing else is taken while it is held,
// and it is never taken with mu held. Functions named ...Locked expect
// the lock named in their comment to be held.
type Server struct {
	unsealer   Unsealer
	attester   Attester
	lockout    func(ctx context.Context) (counter, max uint32, err error)
	log        *slog.Logger
	timeout    atomic.Int64 // time.Duration; see SetAutoLockTimeout
	maxMessage uint32
	askPass    string
	now        func() time.Time
	allowUID   func(uid uint32) bool
	sleep      func(ctx context.Context, d time.Duration)
	metrics    Metrics
	auditor    Auditor
	notifier   Notifier
	knownHost  func(ssh.PublicKey, Peer) string
	// defaultLifetime is Config.DefaultLifetime in seconds.
	defaultLifetime uint32
	upstreams       []*upstream

	maxConns       int
	requestTimeout time.Duration // <= 0: none
	epoch          time.Time     // origin of mono
	warnUnlocked   sync.Once     // the RLIMIT_MEMLOCK warning for request buffers

	// cmu guards the connection table; see the lock order above.
	cmu      sync.Mutex
	conns    map[*conn]struct{}
	evictLog burstLog // idle connections closed to make room
	refuse   burstLog // connections refused: cap reached, none idle

	// base is cancelled by Close; every connection and unseal derives
	// from it.
	base     context.Context
	shutdown context.CancelFunc
	wg       sync.WaitGroup // Serve loops and connections

	// mu guards everything below, and is taken before any identity's mu.
	mu       sync.RWMutex
	closed   bool
	locked   bool
	sealed   []*sealed          // sorted by name
	byName   map[string]*sealed // name -> identity
	byKey    map[string]keyRef  // SSH wire key or certificate -> key
	soft     []*softKey         // in order of addition
	pcrs     map[int][]byte     // last known PCR values (SHA-256), from UpdatePCRs
	lockHash *secmem.Buffer     // argon2id of the lock passphrase, while locked
	lockSalt []byte

	// lockMu serializes Lock and Unlock, including the delay after a
	// failed unlock, so that guesses cannot run in parallel.
	lockMu   sync.Mutex
	failures int // consecutive failed unlocks
}

// keyRef is what a public key blob in a request refers to: a sealed
// identity (its key or its certificate) or a software key.
type keyRef struct {
	sealed *sealed
	soft   *softKey
}

// New returns a server configured by cfg. It serves nothing until Serve or
// ServeConn is called, and has no identities until SetIdentities.
func New(cfg Config) *Server {
	s := &Server{
		unsealer:  cfg.Unsealer,
		attester:  cfg.Attester,
		lockout:   cfg.Lockout,
		log:       cfg.Logger,
		askPass:   cfg.AskPass,
		now:       cfg.Now,
		allowUID:  cfg.AllowUID,
		sleep:     cfg.Sleep,
		metrics:   cfg.Metrics,
		auditor:   cfg.Audit,
		notifier:  cfg.Notify,
		knownHost: cfg.KnownHost,
		byName:    map[string]*sealed{},
		byKey:     map[string]keyRef{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.SetAutoLockTimeout(cfg.AutoLockTimeout)
	if cfg.DefaultLifetime > 0 {
		s.defaultLifetime = uint32(min(max(cfg.DefaultLifetime/time.Second, 1), 1<<32-1))
	}
	s.upstreams = newUpstreams(cfg.Upstreams, s.log)
	s.maxMessage = DefaultMaxMessage
	if cfg.MaxMessage > 0 {
		// A request must fit in one locked buffer with its length.
		s.maxMessage = uint32(min(cfg.MaxMessage, secmem.MaxSize-4))
	}
	s.maxConns = cfg.MaxConns
	if s.maxConns <= 0 {
		s.maxConns = defaultMaxConns()
	}
	s.requestTimeout = cfg.RequestTimeout
	if s.requestTimeout == 0 {
		s.requestTimeout = DefaultRequestTimeout
	}
	s.epoch = time.Now()
	s.conns = map[*conn]struct{}{}
	if s.now == nil {
		s.now = time.Now
	}
	if s.allowUID == nil {
		own := uint32(os.Getuid())
		s.allowUID = func(uid uint32) bool { return uid == own || uid == 0 }
	}
	if s.sleep == nil {
		s.sleep = sleepContext
	}
	if s.metrics == nil {
		s.metrics = noMetrics{}
	}
	s.base, s.shutdown = context.WithCancel(context.Background())
	return s
}

func sleepContext(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// wallNow returns the current wall-clock time without its monotonic
// reading, so that comparisons with a deadline count time spent suspended.
func (s *Server) wallNow() time.Time { return s.now().Round(0) }

// Serve accepts connections on l and serves each in its own goroutine until
// ctx is done or Close is called. It then closes l and every connection,
// waits for their goroutines, zeroizes every cached seed and returns nil.
// If Accept fails for another reason than a temporary one, Serve shuts down
// the same way and returns the error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if !s.enter() {
		l.Close()
		return errClosed
	}
	defer s.wg.Done()

	ctx, cancel := mergeCancel(ctx, s.base)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var conns sync.WaitGroup
	conns.Go(func() { s.sweep(ctx) })
	s.log.Info("agentsrv: serving", "addr", l.Addr().String())

	spare := openSpare()
	defer func() { spare.Close() }()

	var acceptErr error
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if isFDExhaustion(err) {
				// Out of file descriptors, likely a flood of idle
				// connections: close the longest idle one and retry at
				// once. With none idle, take the pending connection on
				// the spare descriptor and refuse it, so that the queue
				// moves and clients see EOF instead of hanging.
				if s.evictForFD() {
					backoff = 0
					sleepContext(ctx, time.Millisecond) // the evicted descriptor closes asynchronously
					continue
				}
				spare = s.refuseWithSpare(l, spare)
			}
			if isTemporary(err) {
				// Out of file descriptors and the like: wait, as
				// net/http does, rather than spin or give up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("agentsrv: accept failed, retrying", "err", err, "delay", backoff)
				sleepContext(ctx, backoff)
				continue
			}
			acceptErr = fmt.Errorf("agentsrv: accept: %w", err)
			break
		}
		backoff = 0
		if spare == nil {
			spare = openSpare()
		}
		pc := s.admit(c)
		if pc == nil {
			continue
		}
		conns.Go(func() { s.serveConn(ctx, pc) })
	}
	cancel()
	l.Close()
	conns.Wait()
	s.DropAll()
	return acceptErr
}

// isTemporary reports whether an Accept error is worth retrying.
func isTemporary(err error) bool {
	var ne interface{ Temporary() bool }
	if errors.As(err, &ne) && ne.Temporary() {
		return true
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// ServeConn serves the agent protocol on c until the peer hangs up, the
// connection fails, a request exceeds Config.MaxMessage, ctx is done or
// Close is called; then it closes c. It returns when the connection is
// done. For a *net.UnixConn, the peer's uid (SO_PEERCRED) must be allowed
// by Config.AllowUID, or c is closed at once; other connections are served
// without a peer check.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	if !s.enter() {
		c.Close()
		return
	}
	defer s.wg.Done()
	ctx, cancel := mergeCancel(ctx, s.base)
	defer cancel()
	pc := s.admit(c)
	if pc == nil {
		return
	}
	s.serveConn(ctx, pc)
}

// enter registers a running Serve or ServeConn, unless the server is
// closed.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// mergeCancel returns a context that is done when either ctx or other is.
func mergeCancel(ctx, other context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(other, cancel)
	return ctx, func() { stop(); cancel() }
}

// DropAll zeroizes every cached seed (the daemon calls it on SIGUSR1). The
// identities stay listed and unseal again on their next use.
func (s *Server) DropAll() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.sealed {
		e.drop()
	}
	if len(s.sealed) > 0 {
		s.log.Debug("agentsrv: dropped all cached seeds")
	}
}

// SetAutoLockTimeout sets how long an unsealed seed stays cached, counted
// from its unseal; zero keeps seeds until lock. It applies to unseals from
// now on (a config reload); seeds cached already keep their expiry.
func (s *Server) SetAutoLockTimeout(d time.Duration) {
	s.timeout.Store(int64(max(d, 0)))
}

func (s *Server) autoLock() time.Duration { return time.Duration(s.timeout.Load()) }

// Close stops every Serve loop and connection, waits for them, zeroizes
// every cached seed and forgets the software keys. The server cannot be
// used afterwards. Close always returns nil.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.shutdown()
	s.wg.Wait()

	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockHash.Destroy()
	s.lockHash = nil
	for _, e := range s.sealed {
		e.retire()
	}
	for _, k := range s.soft {
		k.destroy()
	}
	s.sealed, s.soft = nil, nil
	clear(s.byName)
	clear(s.byKey)
	return nil
}

// errClosed is returned by Serve after Close.
var errClosed = errors.New("agentsrv: server is closed")

// sweep drops the seeds whose wall-clock expiry has passed, every
// sweepInterval, until ctx is done.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.wallNow()
		s.mu.RLock()
		for _, e := range s.sealed {
			e.dropIfExpired(now)
		}
		s.mu.RUnlock()
		s.mu.Lock()
		s.expireSoftLocked(now)
		s.mu.Unlock()
	}
}
