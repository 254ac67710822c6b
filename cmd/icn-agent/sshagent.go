package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/sshagent"
)

// ssh-agent: OpenSSH's ssh-agent command line in front of the daemon
// (internal/sshagent), also when icn-agent is run through a link named
// ssh-agent.

func init() {
	// Invoked through a link named ssh-agent: behave as "icn-agent
	// ssh-agent".
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == "ssh-agent" && (len(os.Args) < 2 || os.Args[1] != "ssh-agent") {
		os.Args = append([]string{os.Args[0], "ssh-agent"}, os.Args[1:]...)
	}
	commands.Register(&cli.Command{
		Name:    "ssh-agent",
		Args:    "[-c | -s] [-Dd] [-a SOCKET] [-E md5|sha256] [-P ALLOWLIST] [-O OPTION] [-t LIFE] [--upstream SOCKET] [--tpm SPEC] [--store DIR] [--config FILE] [COMMAND [ARG...]] | [-c | -s] -k",
		Summary: "Stand in for OpenSSH's ssh-agent: start in the background and print the environment, or run COMMAND with it.",
		Run:     runSSHAgent,
	})
}

func runSSHAgent(e *cli.Env, args []string) error {
	o, err := sshagent.Parse(args)
	if errors.Is(err, sshagent.ErrHelp) {
		c := commands.Lookup("ssh-agent")
		fmt.Fprintf(e.Stdout, "usage: icn-agent %s %s\n\n%s\n", c.Name, c.Args, c.Summary)
		return flag.ErrHelp
	} else if err != nil {
		return sshAgentUsage(err)
	}
	if !o.CSH && !o.SH && strings.HasSuffix(e.Getenv("SHELL"), "csh") {
		o.CSH = true
	}
	if o.Kill {
		pid, err := sshagent.Kill(e.Getenv("SSH_AGENT_PID"))
		if err != nil {
			return err
		}
		fmt.Fprintf(e.Stdout, "%s%secho Agent pid %d killed;\n", sshagent.UnsetLine(o.CSH, "SSH_AUTH_SOCK"), sshagent.UnsetLine(o.CSH, "SSH_AGENT_PID"), pid)
		return nil
	}
	// An agent that serves in this process catches its signals before
	// its socket exists: a SIGTERM must end it cleanly, not kill it with
	// the socket left behind.
	var sigs chan os.Signal
	if o.Child || o.Foreground || o.Debug {
		var stopSignals func()
		sigs, stopSignals = daemonSignals()
		defer stopSignals()
	}
	if o.Child {
		c, err := sshagent.OpenChild(o)
		if err != nil {
			return err
		}
		defer c.Close()
		e2 := *e
		e2.Stdout = c.Ready
		return serveSSHAgent(&e2, o, c.Listener, sigs, c.Stop)
	}

	l, path, dir, err := sshagent.Listen(o, e.Getenv("TMPDIR"))
	switch {
	case errors.Is(err, agentsrv.ErrAgentRunning):
		return cli.WithHint(err, fmt.Sprintf("use the running agent (SSH_AUTH_SOCK=%s), stop it, or pass -a with another path", path))
	case errors.Is(err, agentsrv.ErrUnsafeDir):
		return cli.WithHint(err, "put the socket in a directory only you can write to")
	case err != nil:
		return err
	}
	if o.Foreground || o.Debug {
		if dir != "" {
			defer os.Remove(dir)
		}
		fmt.Fprintf(e.Stdout, "%secho Agent pid %d;\n", sshagent.EnvLine(o.CSH, "SSH_AUTH_SOCK", path), os.Getpid())
		return serveSSHAgent(e, o, l, sigs, nil)
	}
	exe, err := sshagent.Self()
	if err != nil {
		return err
	}
	pid, err := sshagent.StartBackground(o, l, path, dir, exe, os.Stderr)
	if err != nil {
		return err
	}
	if path, err = filepath.Abs(path); err != nil {
		return err
	}
	if len(o.Command) > 0 {
		prog, err := exec.LookPath(o.Command[0])
		if err != nil {
			return err
		}
		env := append(os.Environ(), "SSH_AUTH_SOCK="+path, "SSH_AGENT_PID="+strconv.Itoa(pid))
		// The agent stops when this process (the command, once exec'ed)
		// ends.
		return fmt.Errorf("exec %s: %w", o.Command[0], syscall.Exec(prog, o.Command, env))
	}
	fmt.Fprintf(e.Stdout, "%s%secho Agent pid %d;\n", sshagent.EnvLine(o.CSH, "SSH_AUTH_SOCK", path), sshagent.EnvLine(o.CSH, "SSH_AGENT_PID", strconv.Itoa(pid)), pid)
	return nil
}

// serveSSHAgent runs the daemon on l until a signal or stop, with the
// private OpenSSH agent as upstream when no upstream is configured.
func serveSSHAgent(e *cli.Env, o *sshagent.Options, l net.Listener, sigs <-chan os.Signal, stop <-chan struct{}) error {
	f := common{tpm: o.TPM, store: o.Store, config: o.Config, verbose: o.Verbose || o.Debug, daemon: !o.Child}
	if err := f.setup(e); err != nil {
		return err
	}
	if err := daemonProcess(&f); err != nil {
		return err
	}
	upstreams, stopPrivate, err := sshagent.Upstreams(o, f.cfg.Upstream, e.Getenv("TMPDIR"), f.log)
	if err != nil {
		return sshAgentUsage(err)
	}
	defer stopPrivate()
	opts := daemonOptions(e, &f)
	opts.Listeners, opts.TPMOptional, opts.Upstreams, opts.DefaultLifetime = []net.Listener{l}, true, upstreams, o.Lifetime
	if o.Child { // the environment line is the readiness report, read in sh syntax
		opts.Ready = func(path string) { printSocketEnv(e, path, false) }
	}
	return runDaemon(f.log, opts, sigs, stop)
}

// sshAgentUsage makes sshagent's usage errors the command's (exit status 2,
// with the synopsis).
func sshAgentUsage(err error) error {
	var ue *sshagent.UsageError
	if errors.As(err, &ue) {
		return cli.Usagef("%v", err)
	}
	return err
}
