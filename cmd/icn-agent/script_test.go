package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/swtpmtest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"icn-agent": main})
}

// TestScript runs the txtar scripts in testdata/script against the real
// command, once with the in-process simulator and once with a swtpm process
// per script. Conditions [sim] and [swtpm] select one of the two.
//
// Besides testscript's own commands, scripts can use those in scriptCmds
// (waitsock, waitport, waitfor, sigterm, freeport, sleep, envsubst,
// bigmsg, evalenv, pidgone): see each function's comment.
func TestScript(t *testing.T) {
	testdata, err := filepath.Abs("../../testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"ssh-keygen", "ssh-add", "ssh", "sshd", "git", "setpriv", "swtpm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := exec.LookPath(filepath.Join("/usr/sbin", tool)); err != nil {
				t.Fatalf("%s not installed: run .ci/run, or apt-get install openssh-client openssh-server git util-linux swtpm swtpm-tools tpm2-tools", tool)
			}
		}
	}
	files := scriptFiles(t, "testdata/script")
	// Both backends' scripts are subtests of TestScript, named
	// BACKEND/SCRIPT, started in one order: slowScripts first, each on
	// both backends, so that the longest ones run from the start instead
	// of one backend's waiting for the other's to be done.
	var scripts []pendingScript
	var deadline time.Time
	if d, ok := t.Deadline(); ok {
		deadline = d
	}
	for _, backend := range []string{"sim", "swtpm"} {
		testscript.RunT(collectT{T: t, backend: backend, scripts: &scripts}, testscript.Params{
			Files:               files,
			Deadline:            deadline,
			RequireExplicitExec: true,
			Cmds:                scriptCmds,
			Setup: func(e *testscript.Env) error {
				work := e.WorkDir
				e.Setenv("HOME", work)
				e.Setenv("XDG_DATA_HOME", filepath.Join(work, ".local/share"))
				e.Setenv("XDG_STATE_HOME", filepath.Join(work, ".local/state"))
				e.Setenv("XDG_CONFIG_HOME", filepath.Join(work, ".config"))
				e.Setenv("XDG_RUNTIME_DIR", filepath.Join(work, "run"))
				e.Setenv("STORE", filepath.Join(work, ".local/share/icn-agent/identities"))
				e.Setenv("TESTDATA", testdata) // the module's shared vectors
				e.Setenv("PATH", withSbin(os.Getenv("PATH")))
				// Nothing from the caller's environment may reach the
				// agents and tools the scripts run: git and ssh must
				// see only what the script configures.
				e.Setenv("GIT_CONFIG_NOSYSTEM", "1")
				if backend == "swtpm" {
					// Stopped when the script ends.
					sw := swtpmtest.Start(e.T().(scriptT).T)
					e.Setenv("ICN_AGENT_TPM", sw.Spec())
					e.Setenv("TPM2TOOLS_TCTI", "swtpm:path="+sw.Socket)
				} else {
					e.Setenv("ICN_AGENT_TPM", "sim")
				}
				return nil
			},
			Condition: func(cond string) (bool, error) {
				switch cond {
				case "sim", "swtpm":
					return cond == backend, nil
				case "sk-dummy":
					_, err := os.Stat(skDummy)
					return err == nil, nil
				}
				return false, nil
			},
		})
	}
	rank := func(p pendingScript) int {
		return slices.IndexFunc(files, func(f string) bool { return strings.TrimSuffix(filepath.Base(f), ".txtar") == p.name })
	}
	slices.SortStableFunc(scripts, func(a, b pendingScript) int { return rank(a) - rank(b) })
	for _, p := range scripts {
		t.Run(p.backend+"/"+p.name, func(t *testing.T) { p.run(scriptT{t}) })
	}
}

// pendingScript is a script testscript.RunT asked to run, for a backend.
type pendingScript struct {
	backend, name string
	run           func(testscript.T)
}

// collectT is the testscript.T given to testscript.RunT: it keeps the
// scripts RunT asks it to run, for TestScript to start in its own order.
// Everything else is TestScript's *testing.T.
type collectT struct {
	*testing.T
	backend string
	scripts *[]pendingScript
}

func (c collectT) Run(name string, f func(testscript.T)) {
	*c.scripts = append(*c.scripts, pendingScript{backend: c.backend, name: name, run: f})
}

func (c collectT) Verbose() bool { return testing.Verbose() }

// scriptT is the testscript.T of one script: its subtest.
type scriptT struct{ *testing.T }

func (s scriptT) Run(name string, f func(testscript.T)) {
	s.T.Run(name, func(t *testing.T) { f(scriptT{t}) })
}

func (s scriptT) Verbose() bool { return testing.Verbose() }

// slowScripts are the scripts that take longest (most of it scrypt, at
// age's work factor 18, in a race-enabled binary), slowest first: they
// start first, so that the rest fill the cores around them rather than
// leaving one script running alone at the end.
var slowScripts = []string{
	"backup_policies", "backup", "backup_import", "backup_recipients",
	"pin", "signedpolicy", "import", "agent_remove", "attest_policy", "migrate",
}

// scriptFiles returns the scripts in dir: slowScripts first, in that
// order, then the others by name.
func scriptFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no scripts in %s (%v)", dir, err)
	}
	rank := func(file string) int {
		if i := slices.Index(slowScripts, strings.TrimSuffix(filepath.Base(file), ".txtar")); i >= 0 {
			return i
		}
		return len(slowScripts)
	}
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	return names
}

// withSbin appends /usr/sbin and /sbin to path if missing: sshd lives
// there, and a non-root PATH often lacks them.
func withSbin(path string) string {
	have := map[string]bool{}
	for _, d := range filepath.SplitList(path) {
		have[d] = true
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if !have[d] {
			path += string(os.PathListSeparator) + d
		}
	}
	return path
}

var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"waitsock": cmdWaitSock,
	"waitport": cmdWaitPort,
	"waitfor":  cmdWaitFor,
	"sigterm":  cmdSigterm,
	"freeport": cmdFreePort,
	"sleep":    cmdSleep,
	"envsubst": cmdEnvsubst,
	"bigmsg":   cmdBigMsg,
	"evalenv":  cmdEvalEnv,
	"pidgone":  cmdPidGone,
}

// waitTimeout bounds waitsock and waitport.
const waitTimeout = 10 * time.Second

// pollEvery is the longest pause of the waits that have no event to wait
// for (see backoff).
const pollEvery = 20 * time.Millisecond

// backoff returns the pause before the next try of a poll, after the
// pause last (zero at first): first, then doubling up to max.
func backoff(last, first, max time.Duration) time.Duration {
	if last == 0 {
		return first
	}
	return min(2*last, max)
}

// waitsock PATH: wait (up to 10 s) until an agent at PATH answers a
// request. "! waitsock PATH" waits until PATH no longer exists.
//
// A connection that succeeds says only that the socket listens: the
// kernel queues it until the agent accepts. The answer to a request
// (SSH_AGENTC_REQUEST_IDENTITIES) says the agent serves; icn-agent serve
// installs its signal handlers after it listens and before it serves, so
// a sigterm that follows waitsock finds them in place.
//
// PATH's directory is watched with inotify and PATH checked again at each
// event there: its creation, its chmod (icn-agent's comes after listen),
// its removal. Only a socket that exists but refuses connections is tried
// again without an event: nothing marks the moment between bind(2), which
// creates the file, and listen(2), and a full accept queue (EAGAIN) ends
// without one too.
func cmdWaitSock(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitsock PATH")
	}
	path := ts.MkAbs(args[0])
	w, err := fsnotify.NewWatcher()
	ts.Check(err)
	defer w.Close()
	if err := w.Add(filepath.Dir(path)); err != nil {
		ts.Fatalf("waitsock %s: watch its directory: %v", path, err)
	}
	end := time.Now().Add(waitTimeout)
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	var pause time.Duration
	for {
		var again <-chan time.Time
		if neg {
			if _, err = os.Lstat(path); errors.Is(err, os.ErrNotExist) {
				return
			}
			err = errors.New("still exists")
		} else {
			if err = agentAnswers(path, end); err == nil {
				return
			}
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EAGAIN) {
				pause = backoff(pause, time.Millisecond, pollEvery)
				again = time.After(pause)
			}
		}
		select {
		case _, ok := <-w.Events:
			if !ok {
				ts.Fatalf("waitsock %s: inotify watch closed", path)
			}
		case werr := <-w.Errors:
			ts.Fatalf("waitsock %s: inotify: %v", path, werr)
		case <-again:
		case <-deadline.C:
			ts.Fatalf("waitsock %s: gave up after %v: %v", path, waitTimeout, err)
		}
	}
}

// agentAnswers connects to the agent at path, sends it
// SSH_AGENTC_REQUEST_IDENTITIES and waits (until deadline) for the header
// of its reply, whatever the reply.
func agentAnswers(path string, deadline time.Time) error {
	c, err := net.DialTimeout("unix", path, time.Until(deadline))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	const agentcRequestIdentities = 11
	if _, err := c.Write([]byte{0, 0, 0, 1, agentcRequestIdentities}); err != nil {
		return fmt.Errorf("send a request: %w", err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("read the reply: %w", err)
	}
	return nil
}

// waitport PORT: wait (up to 10 s) until 127.0.0.1:PORT accepts TCP
// connections.
//
// This one polls: no event announces a TCP listener (sshd -D -e says
// "Server listening" on its stderr, but testscript holds a background
// command's output until it ends). The pauses start at 1 ms.
func cmdWaitPort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitport PORT")
	}
	addr := net.JoinHostPort("127.0.0.1", args[0])
	deadline := time.Now().Add(waitTimeout)
	var pause time.Duration
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitport %s: gave up after %v: %v", addr, waitTimeout, err)
		}
		pause = backoff(pause, time.Millisecond, pollEvery)
		time.Sleep(pause)
	}
}

// waitfor DURATION PATTERN PROG [ARGS...]: run PROG (with the script's
// environment, exit status ignored) until its stdout matches the regular
// expression PATTERN, for at most DURATION. "! waitfor" waits until
// stdout no longer matches. The last run's stdout and stderr are left for
// the stdout and stderr commands.
//
// This one polls: the state it waits for is what another process answers
// (ssh-add -l asking the agent), which announces nothing. The pauses
// between runs start at 10 ms and grow to 100 ms.
func cmdWaitFor(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 3 {
		ts.Fatalf("usage: [!] waitfor DURATION PATTERN PROG [ARGS...]")
	}
	limit, err := time.ParseDuration(args[0])
	ts.Check(err)
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	start := time.Now()
	var pause time.Duration
	for n := 1; ; n++ {
		ts.Exec(args[2], args[3:]...)
		if re.MatchString(ts.ReadFile("stdout")) != neg {
			ts.Logf("waitfor: condition met after %d run(s), %v", n, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > limit {
			what := "match"
			if neg {
				what = "stop matching"
			}
			ts.Fatalf("waitfor: stdout of %s did not %s %q within %v (%d runs)", args[2], what, args[1], limit, n)
		}
		pause = backoff(pause, 10*time.Millisecond, 100*time.Millisecond)
		time.Sleep(pause)
	}
}

// sigterm SOCKET: send SIGTERM to the process listening on the unix
// socket SOCKET. (testscript's kill sends only SIGKILL or SIGINT.) The
// process is found with SO_PEERCRED, which on the client's side of a
// connection gives the credentials of the listening process.
func cmdSigterm(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: sigterm SOCKET")
	}
	c, err := net.DialTimeout("unix", ts.MkAbs(args[0]), 5*time.Second)
	ts.Check(err)
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	ts.Check(err)
	var cred *unix.Ucred
	var credErr error
	ts.Check(raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}))
	ts.Check(credErr)
	if cred.Pid <= 1 || int(cred.Pid) == os.Getpid() {
		ts.Fatalf("sigterm: implausible listener pid %d", cred.Pid)
	}
	ts.Check(syscall.Kill(int(cred.Pid), syscall.SIGTERM))
}

// freeport VAR: set VAR to a TCP port on 127.0.0.1 that was free a moment
// ago.
func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	port := l.Addr().(*net.TCPAddr).Port
	ts.Check(l.Close())
	ts.Setenv(args[0], strconv.Itoa(port))
}

// sleep DURATION: sleep, e.g. "sleep 1.5s".
func cmdSleep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: sleep DURATION")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	time.Sleep(d)
}

// envsubst FILE...: replace $VAR and ${VAR} in each file with the
// script's environment (files of a txtar archive are not expanded).
func cmdEnvsubst(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: envsubst FILE...")
	}
	for _, f := range args {
		path := ts.MkAbs(f)
		data, err := os.ReadFile(path)
		ts.Check(err)
		out := os.Expand(string(data), ts.Getenv)
		ts.Check(os.WriteFile(path, []byte(out), 0o644))
	}
}

// bigmsg SOCKET SIZE [PUBFILE]: send the agent at SOCKET one well-formed
// sign request (SSH_AGENTC_SIGN_REQUEST) of SIZE bytes after its 4-byte
// length, for the key in PUBFILE (default: a key the agent does not
// hold), and print to stdout what came back: "reply: type N, L bytes" or
// "closed without reply".
func cmdBigMsg(ts *testscript.TestScript, neg bool, args []string) {
	if neg || (len(args) != 2 && len(args) != 3) {
		ts.Fatalf("usage: bigmsg SOCKET SIZE [PUBFILE]")
	}
	size, err := strconv.Atoi(args[1])
	ts.Check(err)
	var keyBlob []byte
	if len(args) == 3 {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ts.ReadFile(args[2])))
		ts.Check(err)
		keyBlob = pub.Marshal()
	} else {
		keyBlob = ssh.Marshal(struct {
			Type string
			Key  []byte
		}{ssh.KeyAlgoED25519, make([]byte, 32)})
	}
	msg, err := signRequest(keyBlob, size)
	ts.Check(err)

	c, err := net.DialTimeout("unix", ts.MkAbs(args[0]), 5*time.Second)
	ts.Check(err)
	defer c.Close()
	ts.Check(c.SetDeadline(time.Now().Add(10 * time.Second)))
	// The agent may close the connection before the request is all
	// written: a write error is expected then, and the read tells.
	if _, err := c.Write(msg); err != nil {
		ts.Logf("bigmsg: write: %v", err)
	}
	var hdr [4]byte
	n, err := io.ReadFull(c, hdr[:])
	switch {
	case n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		fmt.Fprintln(ts.Stdout(), "closed without reply")
		return
	case err != nil:
		ts.Fatalf("bigmsg: reading the reply: %v (after %d bytes)", err, n)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if len(body) == 0 || len(body) > 1<<20 {
		ts.Fatalf("bigmsg: implausible reply length %d", len(body))
	}
	_, err = io.ReadFull(c, body)
	ts.Check(err)
	fmt.Fprintf(ts.Stdout(), "reply: type %d, %d bytes\n", body[0], len(body))
}

// signRequest returns a framed SSH_AGENTC_SIGN_REQUEST whose body (after
// the 4-byte length) is exactly size bytes: type, key blob, data, flags.
func signRequest(keyBlob []byte, size int) ([]byte, error) {
	const agentcSignRequest = 13
	dataLen := size - 1 - (4 + len(keyBlob)) - 4 - 4
	if dataLen < 0 {
		return nil, fmt.Errorf("bigmsg: size %d is too small for a sign request", size)
	}
	msg := make([]byte, 0, 4+size)
	msg = binary.BigEndian.AppendUint32(msg, uint32(size))
	msg = append(msg, agentcSignRequest)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(keyBlob)))
	msg = append(msg, keyBlob...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(dataLen))
	msg = append(msg, strings.Repeat("x", dataLen)...)
	msg = binary.BigEndian.AppendUint32(msg, 0) // flags
	return msg, nil
}
