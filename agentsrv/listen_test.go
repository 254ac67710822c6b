package agentsrv

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "already listening on "+path) {
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

func TestListenNarrowsDirectory(t *testing.T) {
	dir := filepath.Join(socketDir(t), "wide")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %o, want 700", fi.Mode().Perm())
	}
}

func TestListenRefusesForeignDirectory(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a directory owned by someone else")
	}
	dir := filepath.Join(socketDir(t), "foreign")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(dir, "s")); err == nil || !strings.Contains(err.Error(), "belongs to uid 12345") {
		t.Errorf("Listen in a foreign directory = %v", err)
	}
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
