package main

import (
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/icn/icn-agent/internal/sshagent"
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
// has ended. It waits on the process's pidfd (sshagent.WatchProcess): the
// wait ends when the process does.
func cmdPidGone(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: pidgone VAR")
	}
	pid, err := strconv.Atoi(ts.Getenv(args[0]))
	ts.Check(err)
	gone, err := sshagent.WatchProcess(pid)
	ts.Check(err)
	select {
	case <-gone:
	case <-time.After(waitTimeout):
		ts.Fatalf("pidgone: process %d still running after %v", pid, waitTimeout)
	}
}
