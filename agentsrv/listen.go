package agentsrv

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

var (
	// ErrAgentRunning is wrapped by the error Listen returns when an agent
	// already serves the socket path, including one too busy to accept a
	// connection right now.
	ErrAgentRunning = errors.New("agentsrv: an agent is already listening")
	// ErrUnsafeDir is wrapped by the error Listen returns when the
	// socket's directory lets someone else replace the socket: it belongs
	// to another user, or others may write to it and it lacks the sticky
	// bit.
	ErrUnsafeDir = errors.New("agentsrv: unsafe socket directory")
)

// umaskMu serializes the umask dance in Listen within this package. The
// umask is process-wide; the socket is chmod'ed to 0600 after the bind
// as well, for a file another goroutine creates meanwhile is not ours to
// fix.
var umaskMu sync.Mutex

// Listen creates the agent's unix socket at path and listens on it.
//
// The socket's directory: if it is missing, Listen creates it (and any
// missing parent) with mode 0700. An existing directory is never changed:
// its mode is the user's choice, and a shared directory such as /tmp
// (mode 1777) must keep its mode and sticky bit. It must however not let
// anyone else replace the socket, or a client could be handed an
// impostor: it must belong to the current user or to root, and if others
// may write to it, it must have the sticky bit (which stops them from
// removing or renaming the files of others). Otherwise Listen fails with
// an error wrapping ErrUnsafeDir.
//
// The socket is bound under umask 0177, so it is mode 0600 from birth: in
// a directory others can read, such as /tmp, they see that the socket
// exists (its name, owner and times) but cannot connect to it, since
// connecting needs write permission on the socket; in a sticky directory
// they cannot remove or rename it either. Root can do all of these,
// whatever the modes.
//
// A socket already at path is probed with a non-blocking connect:
//   - it accepts: an agent serves it, and Listen fails (ErrAgentRunning);
//   - EAGAIN: an agent serves it but its accept queue is full (busy, not
//     dead), and Listen fails the same way;
//   - ECONNREFUSED: nobody listens, the socket is stale (an agent that
//     died without cleaning up) and is removed, provided it is still the
//     file that was probed;
//   - anything else: Listen fails and leaves it alone.
//
// Anything but a socket at path is left alone and is an error.
//
// Closing the returned listener removes the socket file only if it is
// still the one Listen bound (same device and inode): a second agent that
// replaced it, once this one's was removed by hand, keeps its socket.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("agentsrv: empty socket path")
	}
	path = filepath.Clean(path)
	if err := checkSocketDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := clearStaleSocket(path); err != nil {
		return nil, err
	}

	umaskMu.Lock()
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Another agent bound the path since clearStaleSocket looked.
			return nil, fmt.Errorf("%w on %s (it started just now)", ErrAgentRunning, path)
		}
		return nil, fmt.Errorf("agentsrv: listen on %s: %w", path, err)
	}
	// Go would unlink by path on Close, whatever is at path by then.
	l.SetUnlinkOnClose(false)
	ours := &unixListener{UnixListener: l, path: path}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		l.Close()
		return nil, fmt.Errorf("agentsrv: listen on %s: %w", path, err)
	}
	ours.dev, ours.ino = st.Dev, st.Ino
	// Belt and braces: the umask already gave 0600.
	if err := os.Chmod(path, 0o600); err != nil {
		ours.Close()
		return nil, fmt.Errorf("agentsrv: listen on %s: %w", path, err)
	}
	return ours, nil
}

// unixListener is a listener on a socket file that Close removes only if
// the file at path is still the one that was bound.
type unixListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
	once     sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		// Between this Lstat and the Remove another agent could replace
		// the file: that takes someone removing ours first, in a
		// directory that only we, root or sticky-bit rules allow to.
		var st unix.Stat_t
		if unix.Lstat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// checkSocketDir makes sure dir exists and that nobody but the current user
// and root can replace a file in it; see Listen. It creates dir, mode
// 0700, if missing, and never changes the mode of a directory it did not
// create.
func checkSocketDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("agentsrv: create socket directory: %w", err)
	}
	switch err := os.Mkdir(dir, 0o700); {
	case err == nil:
		// Created now, mode 0700 less the umask: ours and private. The
		// checks below still run (they cost nothing).
	case errors.Is(err, fs.ErrExist):
	default:
		return fmt.Errorf("agentsrv: create socket directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("agentsrv: socket directory: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("agentsrv: socket directory %s is not a directory", dir)
	}
	if uid := uint32(os.Getuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("%w: %s belongs to uid %d, not to uid %d or root", ErrUnsafeDir, dir, st.Uid, uid)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("%w: others may write to %s (mode %04o) and it has no sticky bit, so they could replace the socket", ErrUnsafeDir, dir, st.Mode&0o7777)
	}
	return nil
}

// clearStaleSocket removes a socket at path that nothing listens on; see
// Listen.
func clearStaleSocket(path string) error {
	var before unix.Stat_t
	err := unix.Lstat(path, &before)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agentsrv: %s: %w", path, err)
	}
	if before.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("agentsrv: %s exists and is not a socket", path)
	}
	switch err := probe(path); {
	case err == nil:
		return fmt.Errorf("%w on %s", ErrAgentRunning, path)
	case errors.Is(err, unix.EAGAIN):
		// Linux answers a non-blocking connect with EAGAIN when the
		// listener's accept queue is full: the agent is alive, only busy.
		return fmt.Errorf("%w on %s (it is busy: its queue of connections is full)", ErrAgentRunning, path)
	case errors.Is(err, unix.ENOENT):
		return nil // removed meanwhile
	case !errors.Is(err, unix.ECONNREFUSED):
		return fmt.Errorf("agentsrv: cannot tell whether an agent listens on %s: %w", path, err)
	}
	// Stale. Remove it only if it is still the file that refused: a new
	// agent may have replaced it since.
	var now unix.Stat_t
	if unix.Lstat(path, &now) != nil || now.Dev != before.Dev || now.Ino != before.Ino {
		return fmt.Errorf("%w on %s (its socket was replaced while it was probed)", ErrAgentRunning, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("agentsrv: remove stale socket: %w", err)
	}
	return nil
}

// probe connects to the unix socket at path without blocking and hangs
// up. It returns nil if something accepted, else connect's errno.
func probe(path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path})
}

// ListenersFromSystemd returns the listening sockets passed by systemd
// socket activation (LISTEN_PID, LISTEN_FDS, file descriptors from 3 on),
// or none if the process was not socket-activated. It unsets the
// activation environment variables, so that children do not inherit
// them, and marks the descriptors close-on-exec. It fails if systemd
// passed descriptors of which none is a listening socket. The listeners do
// not remove their socket files on close: systemd owns them.
func ListenersFromSystemd() ([]net.Listener, error) {
	all, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("agentsrv: systemd socket activation: %w", err)
	}
	var out []net.Listener
	for _, l := range all {
		if l != nil {
			out = append(out, l)
		}
	}
	if len(all) > 0 && len(out) == 0 {
		return nil, fmt.Errorf("agentsrv: systemd passed %d file descriptors and none is a listening socket", len(all))
	}
	return out, nil
}
