package main

import (
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// skDummy is OpenSSH's FIDO provider for tests (Debian's openssh-tests),
// which the [sk-dummy] script condition looks for.
const skDummy = "/usr/lib/openssh/regress/misc/sk-dummy/sk-dummy.so"

// envLine matches the lines ssh-agent prints for sh ("NAME=VALUE;
// export NAME;") and csh ("setenv NAME VALUE;").
var envLine = regexp.MustCompile(`(?m)^(?:([A-Z_]+)=([^;]*); export [A-Z_]+;|setenv ([A-Z_]+) ([^;]*);)$`)

// evalenv [FILE]: set the variables of the ssh-agent output in FILE
// (default: the last command's stdout), as eval would. When it sets
// SSH_AGENT_PID, that agent is sent SIGTERM when the script ends.
func cmdEvalEnv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: evalenv [FILE]")
	}
	file := "stdout"
	if len(args) == 1 {
		file = args[0]
	}
	n := 0
	for _, m := range envLine.FindAllStringSubmatch(ts.ReadFile(file), -1) {
		name, value := m[1], m[2]
		if name == "" {
			name, value = m[3], m[4]
		}
		ts.Setenv(name, value)
		n++
		if name == "SSH_AGENT_PID" {
			if pid, err := strconv.Atoi(value); err == nil && pid > 1 {
				ts.Defer(func() { syscall.Kill(pid, syscall.SIGTERM) })
			}
		}
	}
	if n == 0 {
		ts.Fatalf("evalenv: no variables in %s", file)
	}
}

// pidgone VAR: wait (up to 10 s) until the process whose pid is in $VAR
// has ended.
func cmdPidGone(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: pidgone VAR")
	}
	pid, err := strconv.Atoi(ts.Getenv(args[0]))
	ts.Check(err)
	deadline := time.Now().Add(waitTimeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			ts.Fatalf("pidgone: process %d still running after %v", pid, waitTimeout)
		}
		time.Sleep(pollEvery)
	}
}

func TestConvtime(t *testing.T) {
	for in, want := range map[string]time.Duration{"10": 10 * time.Second, "1h30m": 90 * time.Minute, "2d": 48 * time.Hour, "1w": 7 * 24 * time.Hour, "5m10": 5*time.Minute + 10*time.Second} {
		got, err := convtime(in)
		if err != nil || got != want {
			t.Errorf("convtime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "10q", "-1", "99999999999"} {
		if _, err := convtime(in); err == nil {
			t.Errorf("convtime(%q) succeeded", in)
		}
	}
}

func TestParseSSHAgentArgs(t *testing.T) {
	o, err := parseSSHAgentArgs([]string{"-Ds", "-t1h", "-a", "/tmp/s", "-P/*", "--upstream=/u1", "--upstream", "/u2"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.foreground || !o.sh || o.lifetime != time.Hour || o.socket != "/tmp/s" || o.allowlist != "/*" || len(o.upstreams) != 2 || len(o.cmd) != 0 {
		t.Errorf("parsed %+v", o)
	}
	o, err = parseSSHAgentArgs([]string{"-t", "5", "sh", "-c", "ssh-add -l"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.cmd) != 3 || o.cmd[1] != "-c" {
		t.Errorf("command %q, want sh -c ...", o.cmd)
	}
	for _, bad := range [][]string{{"-c", "-s"}, {"-x"}, {"-t"}, {"-E", "sha1"}, {"-D", "-d"}, {"-k", "sh"}} {
		if _, err := parseSSHAgentArgs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
