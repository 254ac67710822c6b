package daemon

import (
	"errors"
	"net"
	"path/filepath"

	"github.com/icn/icn-agent/agentsrv"
)

// ErrNoRuntimeDir means XDG_RUNTIME_DIR is unset, so there is no default
// socket path.
var ErrNoRuntimeDir = errors.New("XDG_RUNTIME_DIR is not set, so there is no default socket path")

// DefaultSocket returns $XDG_RUNTIME_DIR/icn-agent/agent.sock, with
// getenv reading the environment. Without XDG_RUNTIME_DIR it fails rather
// than guess: the usual fallback, /run/user/UID, is made by the login
// manager with the right owner and lifetime, and an agent creating it
// itself would get neither.
func DefaultSocket(getenv func(string) string) (string, error) {
	dir := getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		return "", ErrNoRuntimeDir
	}
	return filepath.Join(dir, "icn-agent", "agent.sock"), nil
}

// ListenError is a failure to listen on the socket at Path; Err is
// agentsrv.Listen's error (agentsrv.ErrAgentRunning, ErrUnsafeDir, ...),
// which already names the path.
type ListenError struct {
	Path string
	Err  error
}

func (e *ListenError) Error() string { return e.Err.Error() }
func (e *ListenError) Unwrap() error { return e.Err }

// listen returns the sockets to serve: Options.Listeners, else systemd's
// if the agent was socket activated, else a new private socket.
func (a *Agent) listen() ([]net.Listener, error) {
	if a.opts.Listeners != nil {
		return a.opts.Listeners, nil
	}
	ls, err := agentsrv.ListenersFromSystemd()
	if err != nil {
		return nil, err
	}
	if len(ls) > 0 {
		return ls, nil
	}
	path := a.opts.Socket
	if path == "" {
		if path, err = DefaultSocket(a.getenv); err != nil {
			return nil, err
		}
	}
	l, err := agentsrv.Listen(path)
	if err != nil {
		return nil, &ListenError{Path: path, Err: err}
	}
	return []net.Listener{l}, nil
}
