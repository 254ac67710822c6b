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
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// umaskMu serializes the umask dance in Listen within this package. The
// umask is process-wide; the 0700 parent directory protects the socket
// even if another goroutine creates a file meanwhile.
var umaskMu sync.Mutex

// Listen creates the agent's unix socket at path and listens on it.
//
// The parent directory is created with mode 0700 if missing; if it exists,
// it must belong to the current user, and permissions wider than 0700 are
// narrowed. A socket already at path is probed: if an agent answers,
// Listen fails; otherwise the stale socket is removed. Anything else at
// path is left alone and is an error. The socket is bound under umask
// 0177, so it is mode 0600 from birth, and is removed when the listener
// is closed.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("agentsrv: empty socket path")
	}
	path = filepath.Clean(path)
	if err := privateDir(filepath.Dir(path)); err != nil {
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
		return nil, fmt.Errorf("agentsrv: listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	// Belt and braces: the umask already gave 0600.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("agentsrv: listen on %s: %w", path, err)
	}
	return l, nil
}

// privateDir makes sure dir exists, is a directory owned by the current
// user and is accessible to nobody else.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agentsrv: create socket directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("agentsrv: socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("agentsrv: socket directory %s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("agentsrv: socket directory %s: cannot read its owner", dir)
	}
	if uid := os.Getuid(); int(st.Uid) != uid {
		return fmt.Errorf("agentsrv: socket directory %s belongs to uid %d, not to uid %d: choose a private directory", dir, st.Uid, uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("agentsrv: socket directory: %w", err)
		}
	}
	return nil
}

// clearStaleSocket removes a socket at path that nothing listens on.
func clearStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agentsrv: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("agentsrv: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("agentsrv: an agent is already listening on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("agentsrv: remove stale socket: %w", err)
	}
	return nil
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
