package agentsrv

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The connection table bounds how many connections the server holds, so
// that a flood of idle connections (a misbehaving client, or another
// process of the user) cannot exhaust the daemon's file descriptors and
// lock its owner out:
//
//   - Config.MaxConns caps the connections held at once. A connection
//     over the cap makes room by evicting the connection idle the
//     longest; a connection is idle while it waits for the first byte of
//     a request. Connections in the middle of a request are never
//     evicted: if all are, the new connection is refused.
//   - A connection that has started a request must finish it within
//     Config.RequestTimeout (a read deadline), or it is closed: a partial
//     frame cannot pin a connection, and so a descriptor, forever.
//   - If Accept fails for want of descriptors anyway (they are shared with
//     the rest of the process), the longest idle connection is evicted
//     and Accept retried at once; with none idle, a spare descriptor held
//     for the purpose is closed, the pending connection accepted and
//     refused, and the spare reopened.
//
// Evictions and refusals are logged once per burst (see burstLog).

// defaultMaxConns is DefaultMaxConns, lowered to leave fdReserve
// descriptors of RLIMIT_NOFILE to the rest of the process.
func defaultMaxConns() int {
	n := DefaultMaxConns
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < uint64(n+fdReserve) {
		n = max(int(lim.Cur)-fdReserve, 1)
	}
	return n
}

// mono returns the time since the server was created, on the monotonic
// clock.
func (s *Server) mono() int64 { return int64(time.Since(s.epoch)) }

// admit registers a new connection, evicting the longest idle one if the
// table is full. It returns nil, having closed nc, if there is no room.
func (s *Server) admit(nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, ctx: s.base, log: s.log}
	c.lastUsed.Store(s.mono())
	c.idle.Store(true) // until its first request starts
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for len(s.conns) >= s.maxConns {
		if !s.evictLocked() {
			s.refuse.note(s, "agentsrv: refusing connections: connection limit reached and none is idle", "max_conns", s.maxConns)
			nc.Close()
			return nil
		}
	}
	s.conns[c] = struct{}{}
	return c
}

// release removes c from the table.
func (s *Server) release(c *conn) {
	s.cmu.Lock()
	delete(s.conns, c)
	s.cmu.Unlock()
}

// evictLocked closes the connection idle the longest and removes it from
// the table, reporting whether there was one. s.cmu must be held.
func (s *Server) evictLocked() bool {
	for {
		var oldest *conn
		for c := range s.conns {
			if c.idle.Load() && (oldest == nil || c.lastUsed.Load() < oldest.lastUsed.Load()) {
				oldest = c
			}
		}
		if oldest == nil {
			return false
		}
		// Take it only if it is still idle: a connection whose request
		// has started is not interrupted.
		if !oldest.idle.CompareAndSwap(true, false) {
			continue
		}
		oldest.evicted.Store(true)
		delete(s.conns, oldest)
		oldest.nc.Close()
		s.evictLog.note(s, "agentsrv: closing idle connections to make room", "max_conns", s.maxConns)
		return true
	}
}

// evictForFD evicts the longest idle connection after Accept ran out of
// descriptors.
func (s *Server) evictForFD() bool {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.evictLocked()
}

// isFDExhaustion reports whether an Accept error means the process or
// the system is out of file descriptors.
func isFDExhaustion(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// openSpare opens the descriptor refuseWithSpare gives up; nil if even
// that fails (there is then no spare until the next successful Accept).
func openSpare() *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return nil
	}
	return f
}

// refuseWithSpare frees the spare descriptor, accepts one pending
// connection with it and closes that connection, then takes a spare
// again. It returns the new spare (nil if none could be opened).
func (s *Server) refuseWithSpare(l net.Listener, spare *os.File) *os.File {
	if spare == nil {
		return nil
	}
	spare.Close()
	if c, err := l.Accept(); err == nil {
		c.Close()
		s.cmu.Lock()
		s.refuse.note(s, "agentsrv: refusing connections: out of file descriptors and none is idle")
		s.cmu.Unlock()
	}
	return openSpare()
}

// burstLog logs a recurring event once when it starts, then at most once
// per burstInterval with the number of events since the last line. Its
// methods need Server.cmu.
type burstLog struct {
	n    int   // events not yet reported
	last int64 // Server.mono() of the last line; 0 for none yet
}

func (b *burstLog) note(s *Server, msg string, attrs ...any) {
	b.n++
	now := s.mono()
	if b.last != 0 && time.Duration(now-b.last) < burstInterval {
		return
	}
	s.log.LogAttrs(s.base, slog.LevelWarn, msg, slog.Int("count", b.n), slog.Group("", attrs...))
	b.n, b.last = 0, max(now, 1)
}
