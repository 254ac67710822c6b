package sshagent

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// OpenSSHAgent is the OpenSSH agent run as the private upstream.
var OpenSSHAgent = "/usr/bin/ssh-agent"

// PrivateAgent is OpenSSH's ssh-agent run as icn-agent's upstream for the
// key types icn-agent cannot hold.
type PrivateAgent struct {
	cmd      *exec.Cmd
	dir      string
	socket   string
	exited   chan struct{}
	stopping atomic.Bool
}

// StartPrivateAgent starts OpenSSHAgent in the foreground (-D) on a
// socket in a private directory made in tmp, passing on o's -E, -t, -P
// and -O, and waits until it serves. If it exits before Stop, log is told.
func StartPrivateAgent(o *Options, tmp string, log *slog.Logger) (*PrivateAgent, error) {
	exe, _ := os.Executable()
	if fi, err := os.Stat(OpenSSHAgent); err != nil {
		return nil, err
	} else if me, err := os.Stat(exe); err == nil && os.SameFile(fi, me) {
		return nil, fmt.Errorf("%s is icn-agent itself", OpenSSHAgent)
	}
	dir, err := MakeSocketDir(tmp)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "openssh-agent")
	args := []string{"-D", "-a", sock}
	if o.FingerprintHash != "" {
		args = append(args, "-E", o.FingerprintHash)
	}
	if o.Lifetime > 0 {
		args = append(args, "-t", strconv.Itoa(int(o.Lifetime/time.Second)))
	}
	if o.Allowlist != "" {
		args = append(args, "-P", o.Allowlist)
	}
	for _, opt := range o.AgentOptions {
		args = append(args, "-O", opt)
	}
	cmd := exec.Command(OpenSSHAgent, args...)
	// It gets SIGTERM if icn-agent dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, outW, err := os.Pipe()
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	cmd.Stdout = outW
	p := &PrivateAgent{cmd: cmd, dir: dir, socket: sock, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig is sent when the thread that started the process
		// ends, not the process: this goroutine keeps its thread until
		// the agent exits.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(p.exited)
		if !p.stopping.Load() {
			log.Warn("private OpenSSH agent exited; keys icn-agent cannot hold are no longer available", "status", cmd.ProcessState.String())
		}
	}()
	err = <-started
	outW.Close()
	if err != nil {
		out.Close()
		os.Remove(dir)
		return nil, err
	}
	// It prints the environment once its socket is bound.
	br := bufio.NewReader(out)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH_AUTH_SOCK=") {
		p.stopping.Store(true)
		cmd.Process.Kill()
		<-p.exited
		out.Close()
		os.Remove(dir)
		return nil, fmt.Errorf("%s did not start", OpenSSHAgent)
	}
	go func() {
		io.Copy(io.Discard, br)
		out.Close()
	}()
	log.Debug("private OpenSSH agent started", "pid", cmd.Process.Pid, "socket", sock)
	return p, nil
}

// Socket is the private agent's socket.
func (p *PrivateAgent) Socket() string { return p.socket }

// Stop stops the private agent and removes its directory.
func (p *PrivateAgent) Stop() {
	p.stopping.Store(true)
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
	os.Remove(p.socket)
	os.Remove(p.dir)
}

// Upstreams returns the agents icn-agent forwards to: o's --upstream
// sockets, else configured (the config's), else a private OpenSSH agent
// started here, which stop stops (stop is never nil). -P and -O are for
// that private agent: with upstreams they are a UsageError. A private
// agent that cannot start is logged; the agent then serves without it.
func Upstreams(o *Options, configured []string, tmp string, log *slog.Logger) (upstreams []string, stop func(), err error) {
	upstreams = o.Upstreams
	if len(upstreams) == 0 {
		upstreams = configured
	}
	if len(upstreams) > 0 && (o.Allowlist != "" || len(o.AgentOptions) > 0) {
		return nil, nil, usagef("-P and -O apply to the private OpenSSH agent, which is not run when upstream agents are given")
	}
	if o.FingerprintHash == "md5" {
		log.Info("icn-agent logs SHA256 fingerprints; -E md5 applies to the private OpenSSH agent only")
	}
	if len(upstreams) > 0 {
		return upstreams, func() {}, nil
	}
	p, err := StartPrivateAgent(o, tmp, log)
	if err != nil {
		log.Warn("no private OpenSSH agent: keys of types icn-agent cannot hold (ssh-dss, FIDO) cannot be added", "err", err)
		return nil, func() {}, nil
	}
	return []string{p.Socket()}, p.Stop, nil
}
