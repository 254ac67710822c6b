package sshagent

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/agentsrv"
)

// MakeSocketDir creates $TMPDIR/ssh-XXXXXXXXXX (mode 0700), as OpenSSH's
// agent does for its default socket; tmp empty means /tmp.
func MakeSocketDir(tmp string) (string, error) {
	if tmp == "" {
		tmp = "/tmp"
	}
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for range 100 {
		var b [10]byte
		rand.Read(b[:])
		for i := range b {
			b[i] = chars[int(b[i])%len(chars)]
		}
		dir := filepath.Join(tmp, "ssh-"+string(b[:]))
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("create socket directory: %w", err)
		}
	}
	return "", fmt.Errorf("create socket directory in %s: every name taken", tmp)
}

// Listen binds the agent's socket with agentsrv.Listen: o.Socket if set,
// else agent.PID in a new directory made by MakeSocketDir in tmp. It
// returns the socket's path and the directory it made ("" if none).
func Listen(o *Options, tmp string) (l net.Listener, path, dir string, err error) {
	path = o.Socket
	if path == "" {
		if dir, err = MakeSocketDir(tmp); err != nil {
			return nil, "", "", err
		}
		path = filepath.Join(dir, "agent."+strconv.Itoa(os.Getpid()))
	}
	if l, err = agentsrv.Listen(path); err != nil {
		if dir != "" {
			os.Remove(dir)
		}
		return nil, path, "", err
	}
	return l, path, dir, nil
}

// Self returns the path this program was started as (a link named
// icn-agent or ssh-agent is kept as such), else the executable's.
func Self() (string, error) {
	if a := os.Args[0]; strings.Contains(a, "/") {
		return filepath.Abs(a)
	} else if p, err := exec.LookPath(a); err == nil {
		return filepath.Abs(p)
	}
	return os.Executable()
}

// StartBackground starts exe as the background agent: "exe ssh-agent
// --background-child=PID" with o's options, in a new session and in /,
// the socket l (bound at path, in dir if Listen made one) handed over as
// descriptor 3 and a pipe as descriptor 4, on which the agent writes its
// first line once it serves. Until then the agent reports problems on
// stderr (nil: /dev/null). It returns the agent's pid. For the COMMAND
// form the agent watches this process, which then execs COMMAND.
func StartBackground(o *Options, l net.Listener, path, dir, exe string, stderr *os.File) (int, error) {
	fl, ok := l.(interface{ File() (*os.File, error) })
	if !ok {
		return 0, errors.New("socket cannot be handed to the agent process")
	}
	lf, err := fl.File()
	if err != nil {
		return 0, err
	}
	defer lf.Close()
	ready, readyW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer ready.Close()
	// The agent runs in /, as OpenSSH's does (it must not keep a file
	// system busy): paths given relative to here are made absolute.
	if path, err = filepath.Abs(path); err != nil {
		return 0, err
	}
	for _, p := range []*string{&o.Store, &o.Config} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return 0, err
			}
		}
	}
	for i := range o.Upstreams {
		if o.Upstreams[i], err = filepath.Abs(o.Upstreams[i]); err != nil {
			return 0, err
		}
	}
	watch := 0
	if len(o.Command) > 0 {
		watch = os.Getpid()
	}
	args := []string{"ssh-agent", "--background-child=" + strconv.Itoa(watch), "-a", path}
	if dir != "" {
		args = append(args, "--remove-dir")
	}
	args = append(args, o.childArgs()...)
	cmd := exec.Command(exe, args...)
	cmd.ExtraFiles = []*os.File{lf, readyW}
	cmd.Dir = "/"
	if stderr != nil { // a nil *os.File in an io.Writer is not nil
		cmd.Stderr = stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return 0, fmt.Errorf("start the agent: %w", err)
	}
	line, _ := bufio.NewReader(ready).ReadString('\n')
	if !strings.HasPrefix(line, "SSH_AUTH_SOCK=") {
		cmd.Process.Kill()
		cmd.Wait()
		if dir != "" {
			os.Remove(path)
			os.Remove(dir)
		}
		return 0, errors.New("the agent did not start")
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return pid, nil
}

// Child is the background agent's side of StartBackground.
type Child struct {
	// Listener is the socket to serve.
	Listener net.Listener
	// Ready takes the agent's first output, the environment line printed
	// once it serves (in sh syntax), and passes it to the process that
	// started the agent; the agent's stderr then goes to /dev/null.
	Ready io.Writer
	// Stop is closed when the watched process ends; nil if none.
	Stop <-chan struct{}

	socket    string
	removeDir bool
}

// OpenChild takes over the socket (descriptor 3) and the readiness pipe
// (descriptor 4) StartBackground handed over, and starts watching the
// process o.WatchPID names.
func OpenChild(o *Options) (*Child, error) {
	lf := os.NewFile(3, "agent socket")
	readyF := os.NewFile(4, "ready")
	if lf == nil || readyF == nil {
		return nil, errors.New("--background-child is for the agent's own use")
	}
	l, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return nil, err
	}
	c := &Child{Listener: l, Ready: &readyWriter{f: readyF}, socket: o.Socket, removeDir: o.RemoveDir}
	if o.WatchPID > 0 {
		if c.Stop, err = WatchProcess(o.WatchPID); err != nil {
			l.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close removes the socket, and its directory if the agent made it.
func (c *Child) Close() {
	os.Remove(c.socket)
	if c.removeDir {
		os.Remove(filepath.Dir(c.socket))
	}
}

// readyWriter passes its first write to f, closes f and detaches the
// process from its stderr.
type readyWriter struct {
	f    *os.File
	once sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.once.Do(func() {
		n, _ = w.f.Write(p)
		w.f.Close()
		if null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
			unix.Dup2(int(null.Fd()), 2)
			null.Close()
		}
	})
	return n, nil
}

// WatchProcess returns a channel closed when process pid ends (at once if
// there is no such process). It waits on a pidfd: no polling.
func WatchProcess(pid int) (<-chan struct{}, error) {
	done := make(chan struct{})
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		close(done)
		return done, nil
	}
	if err != nil {
		return nil, fmt.Errorf("watch process %d: %w", pid, err)
	}
	go func() {
		defer close(done)
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != nil && errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
	}()
	return done, nil
}

// Kill is ssh-agent -k: it sends SIGTERM to the agent whose pid is
// pidVar (SSH_AGENT_PID's value), and returns that pid.
func Kill(pidVar string) (int, error) {
	if pidVar == "" {
		return 0, errors.New("SSH_AGENT_PID not set, cannot kill agent")
	}
	pid, err := strconv.Atoi(pidVar)
	if err != nil || pid < 2 {
		return 0, fmt.Errorf("SSH_AGENT_PID=%s, which is not a good PID", pidVar)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("kill agent %d: %w", pid, err)
	}
	return pid, nil
}
