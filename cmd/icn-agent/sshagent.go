package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
)

// ssh-agent: OpenSSH's ssh-agent command line (ssh-agent(1)) in front of
// the daemon, so that icn-agent can be used wherever ssh-agent is, and as
// ssh-agent itself through a link of that name.

func init() {
	// Invoked through a link named ssh-agent: behave as "icn-agent
	// ssh-agent".
	if len(os.Args) > 0 && filepath.Base(os.Args[0]) == "ssh-agent" && (len(os.Args) < 2 || os.Args[1] != "ssh-agent") {
		os.Args = append([]string{os.Args[0], "ssh-agent"}, os.Args[1:]...)
	}
	register(&command{
		name:    "ssh-agent",
		args:    "[-c | -s] [-Dd] [-a SOCKET] [-E md5|sha256] [-P ALLOWLIST] [-O OPTION] [-t LIFE] [--upstream SOCKET] [--tpm SPEC] [--store DIR] [--config FILE] [COMMAND [ARG...]] | [-c | -s] -k",
		summary: "Stand in for OpenSSH's ssh-agent: start in the background and print the environment, or run COMMAND with it.",
		run:     runSSHAgent,
	})
}

// sshAgentOpts is the parsed command line of ssh-agent.
type sshAgentOpts struct {
	csh, sh    bool
	foreground bool // -D
	debug      bool // -d
	kill       bool // -k
	socket     string
	fpHash     string
	lifetime   time.Duration
	allowlist  string   // -P
	options    []string // -O
	upstreams  []string
	tpm        string
	store      string
	config     string
	verbose    bool
	cmd        []string

	// Set for the background agent by the process that started it.
	child     bool
	watchPID  int  // stop when this process ends (COMMAND form); 0: never
	removeDir bool // remove the socket's directory on exit
}

// parseSSHAgentArgs parses ssh-agent's options as OpenSSH's getopt does
// (bundled short options, option arguments attached or not, options end
// at the first non-option: COMMAND), plus icn-agent's long options.
func parseSSHAgentArgs(args []string) (*sshAgentOpts, error) {
	o := &sshAgentOpts{}
	long := map[string]*string{"upstream": nil, "tpm": &o.tpm, "store": &o.store, "config": &o.config, "socket": &o.socket, "background-child": nil}
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			args = args[1:]
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		args = args[1:]
		if strings.HasPrefix(a, "--") {
			name, val, has := strings.Cut(a[2:], "=")
			switch name {
			case "verbose":
				o.verbose = true
				continue
			case "remove-dir":
				o.removeDir = true
				continue
			case "help":
				return nil, flagHelp
			}
			dst, ok := long[name]
			if !ok {
				return nil, usagef("unknown option --%s", name)
			}
			if !has {
				if len(args) == 0 {
					return nil, usagef("option --%s needs an argument", name)
				}
				val, args = args[0], args[1:]
			}
			switch name {
			case "upstream":
				o.upstreams = append(o.upstreams, val)
			case "background-child":
				pid, err := strconv.Atoi(val)
				if err != nil {
					return nil, usagef("bad --background-child %q", val)
				}
				o.child, o.watchPID = true, pid
			default:
				*dst = val
			}
			continue
		}
		for i := 1; i < len(a); i++ {
			ch := a[i]
			switch ch {
			case 'c':
				if o.sh {
					return nil, usagef("-c and -s exclude each other")
				}
				o.csh = true
			case 's':
				if o.csh {
					return nil, usagef("-c and -s exclude each other")
				}
				o.sh = true
			case 'D':
				o.foreground = true
			case 'd':
				o.debug = true
			case 'k':
				o.kill = true
			case 'h':
				return nil, flagHelp
			case 'a', 'E', 'P', 'O', 't':
				val := a[i+1:]
				if val == "" {
					if len(args) == 0 {
						return nil, usagef("option -%c needs an argument", ch)
					}
					val, args = args[0], args[1:]
				}
				i = len(a)
				switch ch {
				case 'a':
					o.socket = val
				case 'E':
					if val != "md5" && val != "sha256" {
						return nil, usagef("invalid fingerprint hash %q: want md5 or sha256", val)
					}
					o.fpHash = val
				case 'P':
					if o.allowlist != "" {
						return nil, usagef("-P may be given only once")
					}
					o.allowlist = val
				case 'O':
					o.options = append(o.options, val)
				case 't':
					d, err := convtime(val)
					if err != nil {
						return nil, usagef("invalid lifetime %q: %v", val, err)
					}
					o.lifetime = d
				}
			default:
				return nil, usagef("unknown option -%c", ch)
			}
		}
	}
	o.cmd = args
	if o.foreground && o.debug {
		return nil, usagef("-D and -d exclude each other")
	}
	if len(o.cmd) > 0 && (o.foreground || o.debug || o.csh || o.sh || o.kill) {
		return nil, usagef("COMMAND cannot be combined with -c, -s, -D, -d or -k")
	}
	return o, nil
}

// flagHelp asks for the usage.
var flagHelp = errors.New("help requested")

// convtime parses a time as OpenSSH does: a number of seconds, or a
// sequence of numbers each followed by s, m, h, d or w ("1h30m").
func convtime(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	units := map[byte]time.Duration{'s': time.Second, 'S': time.Second, 'm': time.Minute, 'M': time.Minute,
		'h': time.Hour, 'H': time.Hour, 'd': 24 * time.Hour, 'D': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'W': 7 * 24 * time.Hour}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, errors.New("not a number")
		}
		n, err := strconv.ParseInt(s[:i], 10, 32)
		if err != nil {
			return 0, err
		}
		unit := time.Second
		s = s[i:]
		if s != "" {
			u, ok := units[s[0]]
			if !ok {
				return 0, fmt.Errorf("unknown unit %q", s[0])
			}
			unit, s = u, s[1:]
		}
		total += time.Duration(n) * unit
		if total > time.Duration(1<<31-1)*time.Second {
			return 0, errors.New("too long")
		}
	}
	return total, nil
}

// or returns the flag's values if given, else def.
func (l stringList) or(def []string) []string {
	if len(l) > 0 {
		return l
	}
	return def
}

func runSSHAgent(e *env, args []string) error {
	o, err := parseSSHAgentArgs(args)
	if errors.Is(err, flagHelp) {
		c := lookup("ssh-agent")
		fmt.Fprintf(e.stdout, "usage: icn-agent %s %s\n\n%s\n", c.name, c.args, c.summary)
		return flag.ErrHelp
	}
	if err != nil {
		return err
	}
	if !o.csh && !o.sh && strings.HasSuffix(e.getenv("SHELL"), "csh") {
		o.csh = true
	}
	if o.kill {
		return killAgent(e, o)
	}
	if o.child {
		return runAgentChild(e, o)
	}

	path, dir := o.socket, ""
	if path == "" {
		if dir, err = makeSocketDir(e.getenv("TMPDIR")); err != nil {
			return err
		}
		path = filepath.Join(dir, "agent."+strconv.Itoa(os.Getpid()))
	}
	l, err := agentsrv.Listen(path)
	if err != nil {
		if dir != "" {
			os.Remove(dir)
		}
		switch {
		case errors.Is(err, agentsrv.ErrAgentRunning):
			return withHint(err, fmt.Sprintf("use the running agent (SSH_AUTH_SOCK=%s), stop it, or pass -a with another path", path))
		case errors.Is(err, agentsrv.ErrUnsafeDir):
			return withHint(err, "put the socket in a directory only you can write to")
		}
		return err
	}

	if o.foreground || o.debug {
		if dir != "" {
			defer os.Remove(dir)
		}
		if o.csh {
			fmt.Fprintf(e.stdout, "setenv SSH_AUTH_SOCK %s;\n", path)
		} else {
			fmt.Fprintf(e.stdout, "SSH_AUTH_SOCK=%s; export SSH_AUTH_SOCK;\n", path)
		}
		fmt.Fprintf(e.stdout, "echo Agent pid %d;\n", os.Getpid())
		return serveSSHAgent(e, o, l, nil)
	}
	return startBackground(e, o, l, path, dir)
}

// makeSocketDir creates $TMPDIR/ssh-XXXXXXXXXX (mode 0700), as OpenSSH's
// agent does for its default socket.
func makeSocketDir(tmp string) (string, error) {
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

// startBackground starts the agent as a process of its own (a new
// session, the socket handed over as descriptor 3), waits until it
// serves, then prints the environment or runs COMMAND with it.
func startBackground(e *env, o *sshAgentOpts, l net.Listener, path, dir string) error {
	fl, ok := l.(interface{ File() (*os.File, error) })
	if !ok {
		return errors.New("socket cannot be handed to the agent process")
	}
	lf, err := fl.File()
	if err != nil {
		return err
	}
	exe, err := self()
	if err != nil {
		return err
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	// The agent runs in /, as OpenSSH's does (it must not keep a file
	// system busy): paths given relative to here are made absolute.
	if path, err = filepath.Abs(path); err != nil {
		return err
	}
	for _, p := range []*string{&o.store, &o.config} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return err
			}
		}
	}
	for i := range o.upstreams {
		if o.upstreams[i], err = filepath.Abs(o.upstreams[i]); err != nil {
			return err
		}
	}
	watch := 0
	if len(o.cmd) > 0 {
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
	// Until it serves, the agent reports problems on our stderr; then it
	// detaches from it.
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the agent: %w", err)
	}
	readyW.Close()
	lf.Close()
	line, _ := bufio.NewReader(ready).ReadString('\n')
	ready.Close()
	if !strings.HasPrefix(line, "SSH_AUTH_SOCK=") {
		cmd.Process.Kill()
		cmd.Wait()
		if dir != "" {
			os.Remove(path)
			os.Remove(dir)
		}
		return errors.New("the agent did not start")
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()

	if len(o.cmd) > 0 {
		prog, err := exec.LookPath(o.cmd[0])
		if err != nil {
			return err
		}
		env := append(os.Environ(), "SSH_AUTH_SOCK="+path, "SSH_AGENT_PID="+strconv.Itoa(pid))
		// The agent stops when this process (the command, once exec'ed)
		// ends.
		return fmt.Errorf("exec %s: %w", o.cmd[0], syscall.Exec(prog, o.cmd, env))
	}
	if o.csh {
		fmt.Fprintf(e.stdout, "setenv SSH_AUTH_SOCK %s;\nsetenv SSH_AGENT_PID %d;\n", path, pid)
	} else {
		fmt.Fprintf(e.stdout, "SSH_AUTH_SOCK=%s; export SSH_AUTH_SOCK;\nSSH_AGENT_PID=%d; export SSH_AGENT_PID;\n", path, pid)
	}
	fmt.Fprintf(e.stdout, "echo Agent pid %d;\n", pid)
	return nil
}

// self returns the path this program was started as (a link named
// icn-agent or ssh-agent is kept as such), else the executable's.
func self() (string, error) {
	if a := os.Args[0]; strings.Contains(a, "/") {
		return filepath.Abs(a)
	} else if p, err := exec.LookPath(a); err == nil {
		return filepath.Abs(p)
	}
	return os.Executable()
}

// childArgs are the options the background agent is started with.
func (o *sshAgentOpts) childArgs() []string {
	var a []string
	if o.fpHash != "" {
		a = append(a, "-E", o.fpHash)
	}
	if o.lifetime > 0 {
		a = append(a, "-t", strconv.Itoa(int(o.lifetime/time.Second)))
	}
	if o.allowlist != "" {
		a = append(a, "-P", o.allowlist)
	}
	for _, opt := range o.options {
		a = append(a, "-O", opt)
	}
	for _, u := range o.upstreams {
		a = append(a, "--upstream", u)
	}
	for name, v := range map[string]string{"tpm": o.tpm, "store": o.store, "config": o.config} {
		if v != "" {
			a = append(a, "--"+name, v)
		}
	}
	if o.verbose {
		a = append(a, "--verbose")
	}
	return a
}

// runAgentChild is the background agent: it serves the socket on
// descriptor 3, reports readiness on descriptor 4, and stops when the
// process it watches ends.
func runAgentChild(e *env, o *sshAgentOpts) error {
	lf := os.NewFile(3, "agent socket")
	readyF := os.NewFile(4, "ready")
	if lf == nil || readyF == nil {
		return errors.New("--background-child is for the agent's own use")
	}
	l, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return err
	}
	if o.removeDir {
		defer os.Remove(filepath.Dir(o.socket))
	}
	defer os.Remove(o.socket)
	var stop <-chan struct{}
	if o.watchPID > 0 {
		if stop, err = watchProcess(o.watchPID); err != nil {
			return err
		}
	}
	e2 := *e
	e2.stdout = &readyWriter{f: readyF}
	return serveSSHAgent(&e2, o, l, stop)
}

// readyWriter passes the daemon's first output (the environment line,
// printed once it serves) to the process that started it, then detaches
// the agent from that process's stderr.
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

// watchProcess returns a channel closed when process pid ends.
func watchProcess(pid int) (<-chan struct{}, error) {
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

// serveSSHAgent runs the daemon on l until a signal or stop, with the
// private OpenSSH agent as upstream when no upstream is configured.
func serveSSHAgent(e *env, o *sshAgentOpts, l net.Listener, stop <-chan struct{}) error {
	f := common{tpm: o.tpm, store: o.store, config: o.config, verbose: o.verbose || o.debug, daemon: !o.child}
	if err := f.setup(e); err != nil {
		return err
	}
	slog.SetDefault(f.log)
	log.SetFlags(0)
	log.SetOutput(slogWriter{f.log})
	if err := secmem.HardenProcess(); err != nil {
		return fmt.Errorf("harden process: %w", err)
	}
	upstreams := o.upstreams
	if len(upstreams) == 0 {
		upstreams = f.cfg.Upstream
	}
	if len(upstreams) > 0 && (o.allowlist != "" || len(o.options) > 0) {
		return usagef("-P and -O apply to the private OpenSSH agent, which is not run when upstream agents are given")
	}
	if o.fpHash == "md5" {
		f.log.Info("icn-agent logs SHA256 fingerprints; -E md5 applies to the private OpenSSH agent only")
	}
	if len(upstreams) == 0 {
		priv, err := startPrivateAgent(o, f.log)
		switch {
		case err != nil:
			f.log.Warn("no private OpenSSH agent: keys of types icn-agent cannot hold (ssh-dss, FIDO) cannot be added", "err", err)
		default:
			defer priv.Stop()
			upstreams = []string{priv.socket}
		}
	}
	d := &daemon{
		e:       e,
		f:       &f,
		pcrPoll: f.cfg.Identity.TPM.PCRPoll(),
		// The background agent's environment line is its readiness
		// report (readyWriter), read in sh syntax.
		csh:         false,
		listeners:   []net.Listener{l},
		tpmOptional: true,
		stop:        stop,
		lifetime:    o.lifetime,
		upstreams:   upstreams,
		quiet:       !o.child,
	}
	return d.run()
}

// privateAgent is OpenSSH's ssh-agent run as icn-agent's upstream for the
// key types icn-agent cannot hold.
type privateAgent struct {
	cmd      *exec.Cmd
	dir      string
	socket   string
	exited   chan struct{}
	stopping atomic.Bool
}

// openSSHAgent is the OpenSSH agent run as the private upstream.
var openSSHAgent = "/usr/bin/ssh-agent"

// startPrivateAgent starts OpenSSH's agent in the foreground on a socket
// in a private directory, and waits until it serves.
func startPrivateAgent(o *sshAgentOpts, lg *slog.Logger) (*privateAgent, error) {
	exe, _ := os.Executable()
	if fi, err := os.Stat(openSSHAgent); err != nil {
		return nil, err
	} else if me, err := os.Stat(exe); err == nil && os.SameFile(fi, me) {
		return nil, fmt.Errorf("%s is icn-agent itself", openSSHAgent)
	}
	dir, err := makeSocketDir(os.Getenv("TMPDIR"))
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "openssh-agent")
	args := []string{"-D", "-a", sock}
	if o.fpHash != "" {
		args = append(args, "-E", o.fpHash)
	}
	if o.lifetime > 0 {
		args = append(args, "-t", strconv.Itoa(int(o.lifetime/time.Second)))
	}
	if o.allowlist != "" {
		args = append(args, "-P", o.allowlist)
	}
	for _, opt := range o.options {
		args = append(args, "-O", opt)
	}
	cmd := exec.Command(openSSHAgent, args...)
	// It gets SIGTERM if icn-agent dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, outW, err := os.Pipe()
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	cmd.Stdout = outW
	p := &privateAgent{cmd: cmd, dir: dir, socket: sock, exited: make(chan struct{})}
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
			lg.Warn("private OpenSSH agent exited; keys icn-agent cannot hold are no longer available", "status", cmd.ProcessState.String())
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
		return nil, fmt.Errorf("%s did not start", openSSHAgent)
	}
	go func() {
		io.Copy(io.Discard, br)
		out.Close()
	}()
	lg.Debug("private OpenSSH agent started", "pid", cmd.Process.Pid, "socket", sock)
	return p, nil
}

// Stop stops the private agent and removes its directory.
func (p *privateAgent) Stop() {
	p.stopping.Store(true)
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
	os.Remove(p.socket)
	os.Remove(p.dir)
}

// killAgent is ssh-agent -k: it stops the agent SSH_AGENT_PID names and
// prints the shell commands that unset its variables.
func killAgent(e *env, o *sshAgentOpts) error {
	v := e.getenv("SSH_AGENT_PID")
	if v == "" {
		return errors.New("SSH_AGENT_PID not set, cannot kill agent")
	}
	pid, err := strconv.Atoi(v)
	if err != nil || pid < 2 {
		return fmt.Errorf("SSH_AGENT_PID=%s, which is not a good PID", v)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("kill agent %d: %w", pid, err)
	}
	if o.csh {
		fmt.Fprintf(e.stdout, "unsetenv SSH_AUTH_SOCK;\nunsetenv SSH_AGENT_PID;\n")
	} else {
		fmt.Fprintf(e.stdout, "unset SSH_AUTH_SOCK;\nunset SSH_AGENT_PID;\n")
	}
	fmt.Fprintf(e.stdout, "echo Agent pid %d killed;\n", pid)
	return nil
}

// noTPM is the Unsealer of an agent that found no TPM.
type noTPM struct{ err error }

func (n noTPM) Unseal(context.Context, *sealstore.Blob, []byte) error { return n.err }

// runWithoutTPM serves keys added with ssh-add (and upstream agents')
// when no TPM is reachable.
func (d *daemon) runWithoutTPM(ctx context.Context, tpmErr error) error {
	d.log.Warn("no TPM reachable: sealed identities are unavailable; serving keys added with ssh-add", "err", tpmErr)
	d.srv = agentsrv.New(agentsrv.Config{
		Unsealer:        noTPM{tpmErr},
		Logger:          d.log,
		AskPass:         d.e.getenv("SSH_ASKPASS"),
		DefaultLifetime: d.lifetime,
		Upstreams:       d.upstreams,
	})
	defer d.srv.Close()
	listeners, err := d.listen()
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(listeners))
	for _, l := range listeners {
		wg.Go(func() {
			if err := d.srv.Serve(ctx, l); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	d.log.Info("icn-agent serving without a TPM", "socket", d.socketDesc(listeners))
	d.printEnv(listeners)
	var runErr error
loop:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			d.log.Info("shutting down", "signal", sig.String())
			break loop
		case err := <-errs:
			runErr = err
			break loop
		case <-d.stop:
			d.log.Info("shutting down")
			break loop
		}
	}
	cancel()
	wg.Wait()
	return runErr
}
