package agentsrv

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestListen(t *testing.T) {
	dir := socketDir(t)
	path := filepath.Join(dir, "sub", "agent.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}

	// Something answers on the socket: refuse to take it over.
	go func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}(l)
	if _, err := Listen(path); !errors.Is(err, ErrAgentRunning) || !strings.Contains(err.Error(), "already listening on "+path) {
		t.Errorf("Listen on a live socket = %v", err)
	}

	// Closing removes the socket file.
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}

	// A stale socket (nobody listening) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not there: %v", err)
	}
	l, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()

	// A regular file is not ours to delete.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file = %v", err)
	}
}

// TestListenDirectoryModes: Listen creates a missing directory 0700 and
// never changes the mode of one it did not create. A shared directory
// like /tmp (1777) keeps its mode and sticky bit (before, serve -a
// /tmp/x.sock run as root made /tmp 0700); one where others could
// replace the socket is refused and left as it was.
func TestListenDirectoryModes(t *testing.T) {
	tests := []struct {
		name   string
		mode   fs.FileMode // 0: the directory does not exist
		unsafe bool
		want   fs.FileMode // mode afterwards
	}{
		{"missing", 0, false, fs.ModeDir | 0o700},
		{"private", 0o700, false, fs.ModeDir | 0o700},
		{"readable", 0o755, false, fs.ModeDir | 0o755},
		{"tmp-like", 0o777 | fs.ModeSticky, false, fs.ModeDir | fs.ModeSticky | 0o777},
		{"world-writable", 0o777, true, fs.ModeDir | 0o777},
		{"group-writable", 0o770, true, fs.ModeDir | 0o770},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(socketDir(t), "d")
			if tc.mode != 0 {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				// Chmod, not Mkdir's mode: the umask does not apply.
				if err := os.Chmod(dir, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "agent.sock")
			l, err := Listen(path)
			if tc.unsafe {
				if !errors.Is(err, ErrUnsafeDir) {
					t.Errorf("Listen = %v, want ErrUnsafeDir", err)
				}
				if _, err := os.Lstat(path); !os.IsNotExist(err) {
					t.Errorf("socket created in an unsafe directory: %v", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				if m := mode(t, path); m != fs.ModeSocket|0o600 {
					t.Errorf("socket mode %v, want srw-------", m)
				}
			}
			if m := mode(t, dir); m != tc.want {
				t.Errorf("directory mode %v, want %v", m, tc.want)
			}
		})
	}
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// TestListenBusyAgent: an agent whose accept queue is full answers a
// connect with EAGAIN. It is alive: a second Listen must not take its
// socket (before, it was taken for dead and its socket replaced).
func TestListenBusyAgent(t *testing.T) {
	path := filepath.Join(socketDir(t), "agent.sock")
	// A listener with a backlog of 0 and one connection it has not
	// accepted: its queue is full.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	queued, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	if err := probe(path); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("probe of a full queue = %v, want EAGAIN (the test needs a full queue)", err)
	}
	before := inode(t, path)

	l, err := Listen(path)
	if err == nil {
		l.Close()
		t.Fatal("Listen took the socket of a busy agent")
	}
	if !errors.Is(err, ErrAgentRunning) || !strings.Contains(err.Error(), "busy") {
		t.Errorf("Listen = %v, want ErrAgentRunning saying the agent is busy", err)
	}
	if inode(t, path) != before {
		t.Error("the busy agent's socket was replaced")
	}
	// And the busy agent still has its client.
	nfd, _, err := unix.Accept(fd)
	if err != nil {
		t.Fatalf("the busy agent cannot accept its queued client: %v", err)
	}
	unix.Close(nfd)
}

// TestListenCloseKeepsReplacedSocket: Close removes the socket file only
// if it is still the one Listen bound. If it was removed and another
// agent bound the path since, that agent keeps its socket (before, Go's
// listener unlinked the path, whatever was there).
func TestListenCloseKeepsReplacedSocket(t *testing.T) {
	path := filepath.Join(socketDir(t), "agent.sock")
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	second, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	secondInode := inode(t, path)

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil || inode(t, path) != secondInode {
		t.Fatalf("closing the first listener removed or changed the second one's socket: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("second agent unreachable: %v", err)
	}
	c.Close()

	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after its own listener closed: %v", err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestListenersFromSystemdNotActivated(t *testing.T) {
	t.Setenv("LISTEN_PID", "")
	t.Setenv("LISTEN_FDS", "")
	ls, err := ListenersFromSystemd()
	if err != nil || len(ls) != 0 {
		t.Errorf("ListenersFromSystemd = %v, %v; want none", ls, err)
	}
}

// TestListenersFromSystemd passes a listening socket to a child process as
// systemd does (fd 3, LISTEN_FDS=1, LISTEN_PID its pid) and has the child
// accept a connection on it.
func TestListenersFromSystemd(t *testing.T) {
	if os.Getenv("AGENTSRV_SYSTEMD_CHILD") == "1" {
		systemdChild()
		return
	}
	path := filepath.Join(socketDir(t), "activated")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestListenersFromSystemd$")
	cmd.ExtraFiles = []*os.File{f} // fd 3 in the child
	// systemd sets LISTEN_PID to the child's pid between fork and exec;
	// exec.Command cannot, so the child sets it itself.
	cmd.Env = append(os.Environ(), "AGENTSRV_SYSTEMD_CHILD=1", "LISTEN_FDS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "child: 1 listener, env cleared") {
		t.Errorf("child output:\n%s", out)
	}
}

func systemdChild() {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	ls, err := ListenersFromSystemd()
	if err != nil || len(ls) != 1 {
		fmt.Printf("child: ListenersFromSystemd = %v, %v\n", ls, err)
		os.Exit(1)
	}
	if os.Getenv("LISTEN_PID") != "" || os.Getenv("LISTEN_FDS") != "" {
		fmt.Println("child: activation environment not cleared")
		os.Exit(1)
	}
	// Serve one connection from ourselves to prove it listens.
	go func() {
		c, err := net.Dial("unix", ls[0].Addr().String())
		if err == nil {
			c.Close()
		}
	}()
	c, err := ls[0].Accept()
	if err != nil {
		fmt.Printf("child: accept: %v\n", err)
		os.Exit(1)
	}
	c.Close()
	fmt.Println("child: 1 listener, env cleared")
}
