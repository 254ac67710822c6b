package sshagent

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icn/icn-agent/agentsrv"
)

func TestEnvLines(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{EnvLine(false, "SSH_AUTH_SOCK", "/tmp/s"), "SSH_AUTH_SOCK=/tmp/s; export SSH_AUTH_SOCK;\n"},
		{EnvLine(true, "SSH_AGENT_PID", "42"), "setenv SSH_AGENT_PID 42;\n"},
		{UnsetLine(false, "SSH_AUTH_SOCK"), "unset SSH_AUTH_SOCK;\n"},
		{UnsetLine(true, "SSH_AGENT_PID"), "unsetenv SSH_AGENT_PID;\n"},
	} {
		if c.got != c.want {
			t.Errorf("got %q; want %q", c.got, c.want)
		}
	}
}

func TestMakeSocketDir(t *testing.T) {
	tmp := t.TempDir()
	dir, err := MakeSocketDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(dir), "ssh-") || len(filepath.Base(dir)) != 14 || filepath.Dir(dir) != tmp || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory %s, mode %v", dir, fi.Mode())
	}
}

// TestListen: the default socket is agent.PID in a new directory; a
// second agent on the same socket gets agentsrv.ErrAgentRunning, and the
// directory it would have made is gone.
func TestListen(t *testing.T) {
	tmp := t.TempDir()
	l, path, dir, err := Listen(&Options{}, tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if path != filepath.Join(dir, "agent."+strconv.Itoa(os.Getpid())) {
		t.Errorf("socket %s in %s", path, dir)
	}
	if _, _, _, err := Listen(&Options{Socket: path}, tmp); !errors.Is(err, agentsrv.ErrAgentRunning) {
		t.Errorf("second listener: %v; want ErrAgentRunning", err)
	}
	if _, _, _, err := Listen(&Options{}, filepath.Join(tmp, "missing")); err == nil {
		t.Error("a socket directory in a missing TMPDIR")
	}
}

func TestChildArgs(t *testing.T) {
	o := &Options{FingerprintHash: "md5", Lifetime: time.Hour, Allowlist: "/usr/*", AgentOptions: []string{"no-restrict-websafe"},
		Upstreams: []string{"/u"}, TPM: "sim", Verbose: true}
	got := strings.Join(o.childArgs(), " ")
	want := "-E md5 -t 3600 -P /usr/* -O no-restrict-websafe --upstream /u --tpm sim --verbose"
	if got != want {
		t.Errorf("childArgs = %q; want %q", got, want)
	}
}

// TestWatchProcess waits for a process's end on its pidfd.
func TestWatchProcess(t *testing.T) {
	cmd := exec.Command("cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, err := WatchProcess(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("done while the process runs")
	default:
	}
	stdin.Close() // cat ends
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the end of the process was not seen")
	}
	cmd.Wait()
	// A process that is gone: done at once.
	done, err = WatchProcess(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	<-done
}

func TestKill(t *testing.T) {
	for _, v := range []string{"", "x", "1"} {
		if _, err := Kill(v); err == nil {
			t.Errorf("Kill(%q) succeeded", v)
		}
	}
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid, err := Kill(strconv.Itoa(cmd.Process.Pid))
	if err != nil || pid != cmd.Process.Pid {
		t.Fatalf("Kill = %d, %v", pid, err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("after Kill the process ended with %v; want SIGTERM", err)
	}
}

// TestStartBackground hands the socket to a stand-in for the agent: a
// script that checks its arguments and descriptors and reports ready as
// the agent does, with its environment line on descriptor 4.
func TestStartBackground(t *testing.T) {
	tmp := t.TempDir()
	exe := filepath.Join(tmp, "agent")
	script := `#!/bin/sh
echo "$@" > "$0.args"
[ -S /proc/self/fd/3 ] || ls -l /proc/self/fd/3 > "$0.args"
echo "SSH_AUTH_SOCK=$4; export SSH_AUTH_SOCK;" >&4
`
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o := &Options{Lifetime: time.Minute, Store: "store"}
	l, path, dir, err := Listen(o, tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pid, err := StartBackground(o, l, path, dir, exe, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pid <= 1 {
		t.Errorf("pid %d", pid)
	}
	args, err := os.ReadFile(exe + ".args")
	if err != nil {
		t.Fatal(err)
	}
	store, _ := filepath.Abs("store")
	want := "ssh-agent --background-child=0 -a " + path + " --remove-dir -t 60 --store " + store + "\n"
	if string(args) != want {
		t.Errorf("the agent was started with %q; want %q", args, want)
	}

	// An agent that exits without reporting ready: an error, and the
	// socket and its directory are removed.
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	l2, path2, dir2, err := Listen(&Options{}, tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, err := StartBackground(&Options{}, l2, path2, dir2, exe, nil); err == nil {
		t.Fatal("an agent that did not start was reported started")
	}
	if _, err := os.Stat(dir2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory left behind: %v", err)
	}
}

// TestPrivateAgent starts OpenSSH's agent as the private upstream: it
// answers on its socket, and Stop removes its directory.
func TestPrivateAgent(t *testing.T) {
	if _, err := os.Stat(OpenSSHAgent); err != nil {
		t.Fatalf("OpenSSH's agent not installed (%v): run .ci/run, or apt-get install openssh-client", err)
	}
	p, err := StartPrivateAgent(&Options{Lifetime: time.Minute}, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", p.Socket())
	if err != nil {
		t.Fatal(err)
	}
	// SSH_AGENTC_REQUEST_IDENTITIES; the answer is SSH_AGENT_IDENTITIES_ANSWER (12).
	c.Write([]byte{0, 0, 0, 1, 11})
	rsp := make([]byte, 5)
	if _, err := io.ReadFull(c, rsp); err != nil || rsp[4] != 12 {
		t.Errorf("private agent answered %v, %v", rsp, err)
	}
	c.Close()
	p.Stop()
	if _, err := os.Stat(filepath.Dir(p.Socket())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private agent's directory left behind: %v", err)
	}
}
