package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/config"
	"github.com/icn/icn-agent/internal/metrics"
	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/unlock"
	"github.com/icn/icn-agent/pcrwatch"
	"github.com/icn/icn-agent/sealstore"
)

func init() {
	register(&command{
		name:    "serve",
		args:    "[-a SOCKET] [-c] [--upstream SOCKET]... [--pcr-poll DURATION] [--metrics-listen HOST:PORT]",
		summary: "Run the agent in the foreground, serving every sealed identity on SSH_AUTH_SOCK.",
		run:     runServe,
	})
}

// errNoRuntimeDir means XDG_RUNTIME_DIR is unset, so there is no default
// socket path.
var errNoRuntimeDir = errors.New("XDG_RUNTIME_DIR is not set, so there is no default socket path: pass one with -a (for example -a ~/.ssh/icn-agent.sock), or start icn-agent from a login session that sets XDG_RUNTIME_DIR")

// DefaultSocket returns $XDG_RUNTIME_DIR/icn-agent/agent.sock, with
// getenv reading the environment. Without XDG_RUNTIME_DIR it fails rather
// than guess: the usual fallback, /run/user/UID, is made by the login
// manager with the right owner and lifetime, and an agent creating it
// itself would get neither.
func DefaultSocket(getenv func(string) string) (string, error) {
	dir := getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		return "", errNoRuntimeDir
	}
	return filepath.Join(dir, "icn-agent", "agent.sock"), nil
}

func runServe(e *env, args []string) error {
	c := lookup("serve")
	var f common
	fs := newFlagSet(c)
	f.register(fs)
	socket := fs.String("socket", "", "socket path (default $XDG_RUNTIME_DIR/icn-agent/agent.sock; ignored under systemd socket activation)")
	fs.StringVar(socket, "a", "", "alias for --socket")
	csh := fs.Bool("c", false, "print the environment in csh syntax")
	pcrPoll := fs.Duration("pcr-poll", 0, "how often to read the PCRs identities are bound to (default from config, else 30s)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, ADDR a loopback HOST:PORT such as 127.0.0.1:9477 (default: no metrics endpoint)")
	metricsAny := fs.Bool("metrics-listen-any", false, "allow --metrics-listen on a non-loopback address (the endpoint has no authentication)")
	var upstreams stringList
	fs.Var(&upstreams, "upstream", "socket of another agent whose keys are listed after icn-agent's own and used through it (repeatable; default from config)")
	pos, err := parseFlags(e, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("serve takes no arguments")
	}
	f.daemon = true
	if err := f.setup(e); err != nil {
		return err
	}
	if *pcrPoll == 0 {
		*pcrPoll = f.cfg.Identity.TPM.PCRPoll()
	}
	if *pcrPoll < 0 {
		return usagef("--pcr-poll must be positive")
	}
	if *metricsAny && *metricsListen == "" {
		return usagef("--metrics-listen-any needs --metrics-listen")
	}
	// x/crypto's ServeAgent reports failed requests through the standard
	// logger: route it into ours, at debug. (slog.SetDefault redirects the
	// standard logger too, so it goes first.)
	slog.SetDefault(f.log)
	log.SetFlags(0)
	log.SetOutput(slogWriter{f.log})

	if err := secmem.HardenProcess(); err != nil {
		return fmt.Errorf("harden process: %w", err)
	}
	// Seeds are cached in locked memory; if the kernel refuses to lock it
	// (RLIMIT_MEMLOCK), they still work but may be swapped out: say so.
	if probe, err := secmem.New(64); err == nil {
		if !probe.Locked() {
			f.log.Warn("cannot lock memory: cached seeds may be swapped to disk; raise RLIMIT_MEMLOCK (ulimit -l, or LimitMEMLOCK= in the systemd unit)")
		}
		probe.Destroy()
	}
	d := &daemon{
		e:       e,
		f:       &f,
		socket:  *socket,
		csh:     *csh,
		pcrPoll: *pcrPoll,

		metricsAddr: *metricsListen,
		metricsAny:  *metricsAny,
		upstreams:   upstreams.or(f.cfg.Upstream),
	}
	return d.run()
}

// slogWriter turns lines written to the standard logger into debug logs.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

// daemon is the running agent: the TPM, the store and its watcher, the PCR
// watcher and the agent server, wired together.
type daemon struct {
	e       *env
	f       *common
	socket  string
	csh     bool
	pcrPoll time.Duration
	// metricsAddr, if set, is where Prometheus metrics are served;
	// metricsAny allows a non-loopback address.
	metricsAddr string
	metricsAny  bool
	// Set by ssh-agent (sshagent.go): the sockets to serve, whether the
	// agent serves added keys when no TPM is reachable, when to stop,
	// the default lifetime of added keys, upstream agents, and whether
	// to print no environment.
	listeners   []net.Listener
	tpmOptional bool
	stop        <-chan struct{}
	lifetime    time.Duration
	upstreams   []string
	quiet       bool

	log   *slog.Logger
	store *sealstore.Store
	srv   *agentsrv.Server
	pcrs  *pcrwatch.Watcher
	da    *unlock.DACache
}

func (d *daemon) run() error {
	d.log = d.f.log
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	store, err := sealstore.Open(d.f.store)
	if err != nil {
		return err
	}
	d.store = store
	var m *metrics.Metrics
	var metricsL net.Listener
	var agentMetrics agentsrv.Metrics // nil unless metrics are on
	if d.metricsAddr != "" {
		m = metrics.New()
		agentMetrics = m
		if metricsL, err = metrics.Listen(d.metricsAddr, d.metricsAny); err != nil {
			return err
		}
		defer metricsL.Close()
	}
	tpm, err := d.openTPM(ctx, m)
	if err != nil && d.tpmOptional {
		return d.runWithoutTPM(ctx, err)
	}
	if err != nil {
		return err
	}
	defer tpm.Close()

	// Every use of the TPM on behalf of a request is bounded by
	// tpm_timeout_secs, the wait for the TPM included: a request that
	// needs a wedged TPM fails after that long instead of hanging. What
	// the agent reports without a request (the dictionary-attack
	// counter for status and metrics) is read in the background and
	// served from memory.
	timeout := d.f.cfg.Identity.TPM.TPMTimeout()
	bounded := boundedTPM{tpm: tpm, timeout: timeout}
	d.da = unlock.NewDACache(bounded, d.log)
	attester := &tpmAttester{tpm: bounded, path: akPath(store), store: store}
	ctl, err := d.control(attester)
	if err != nil {
		return err
	}
	defer ctl.close(d.log, timeout) // after the server's Close below
	d.srv = agentsrv.New(agentsrv.Config{
		Metrics: agentMetrics,
		Unsealer: &unlock.Unsealer{
			TPM:      bounded,
			Store:    store,
			Askpass:  d.e.getenv("SSH_ASKPASS"),
			Log:      d.log,
			Advise:   func(b *sealstore.Blob, err error) error { return adviseUnseal(store, b, err) },
			AfterPIN: d.da.Poke,
		},
		Attester:        attester,
		Lockout:         d.da.Lockout,
		Logger:          d.log,
		AutoLockTimeout: d.f.cfg.Identity.TPM.AutoLockTimeout(),
		AskPass:         d.e.getenv("SSH_ASKPASS"),
		Audit:           ctl.auditor,
		Notify:          ctl.notifier,
		KnownHost:       ctl.knownHost,
		DefaultLifetime: d.lifetime,
		Upstreams:       d.upstreams,
	})
	defer d.srv.Close()

	watcher := sealstore.NewWatcher(store, d.log)
	d.pcrs = pcrwatch.New(pcrwatch.TPMReader(tpm), d.pcrPoll, d.log)
	d.pcrs.SetTimeout(timeout)
	// Serve the identities from the first connection on: the watcher's
	// first snapshot comes only once it runs.
	entries, err := store.List()
	if err != nil {
		return err
	}
	d.setIdentities(sealstore.Snapshot{Entries: entries})

	listeners, err := d.listen()
	if err != nil {
		return err
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	var wg sync.WaitGroup
	errs := make(chan error, len(listeners)+5) // one per goroutine started below
	start := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	for _, l := range listeners {
		start("agent", func(ctx context.Context) error { return d.srv.Serve(ctx, l) })
	}
	start("store watcher", watcher.Run)
	start("PCR watcher", d.pcrs.Run)
	start("dictionary-attack reader", d.da.Run)
	if ctl.notify != nil {
		start("notifier", ctl.notify.Run)
	}
	if m != nil {
		m.WatchServer(d.srv.Status)
		start("metrics", func(ctx context.Context) error { return m.Serve(ctx, metricsL, d.log) })
	}

	d.log.Info("icn-agent serving", "socket", d.socketDesc(listeners), "store", store.Dir(), "tpm", tpm.Spec().String(),
		"auto_lock_timeout", d.f.cfg.Identity.TPM.AutoLockTimeout(), "pcr_poll", d.pcrPoll, "tpm_timeout", timeout)
	d.printEnv(listeners)

	var runErr error
loop:
	for {
		select {
		case snap, ok := <-watcher.Updates():
			if ok {
				d.setIdentities(snap)
			}
		case changes, ok := <-d.pcrs.Changes():
			if ok {
				d.pcrChanged(changes)
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				d.reload()
				watcher.Rescan()
			case syscall.SIGUSR1:
				d.srv.DropAll()
				d.log.Info("dropped every cached seed (SIGUSR1)")
			default:
				d.log.Info("shutting down", "signal", sig.String())
				break loop
			}
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

// openTPM opens the selected TPM as common.openTPM does for the daemon,
// reporting every command to m if set.
func (d *daemon) openTPM(ctx context.Context, m *metrics.Metrics) (*tpmdev.TPM, error) {
	spec, err := tpmdev.ParseSpec(d.f.tpm)
	if err != nil {
		return nil, err
	}
	// The agent owns the TPM for long: it flushes what dead clients left
	// on a swtpm (see common.openTPM).
	opts := tpmdev.Options{Logger: d.log, FlushStale: true, CommandTimeout: d.f.cfg.Identity.TPM.TPMTimeout()}
	if m != nil {
		opts.Observe = m.ObserveTPM
	}
	return tpmdev.Open(ctx, spec, opts)
}

// listen returns the sockets to serve: systemd's if the agent was socket
// activated, else a fresh private socket.
func (d *daemon) listen() ([]net.Listener, error) {
	if d.listeners != nil {
		return d.listeners, nil
	}
	ls, err := agentsrv.ListenersFromSystemd()
	if err != nil {
		return nil, err
	}
	if len(ls) > 0 {
		return ls, nil
	}
	path := d.socket
	if path == "" {
		var err error
		if path, err = DefaultSocket(d.e.getenv); err != nil {
			return nil, err
		}
	}
	l, err := agentsrv.Listen(path)
	switch {
	case errors.Is(err, agentsrv.ErrAgentRunning):
		return nil, withHint(err, fmt.Sprintf("use the running agent (SSH_AUTH_SOCK=%s), stop it, or pass -a with another path", path))
	case errors.Is(err, agentsrv.ErrUnsafeDir):
		return nil, withHint(err, "put the socket in a directory only you can write to, such as the default $XDG_RUNTIME_DIR/icn-agent/agent.sock")
	case err != nil:
		return nil, err
	}
	return []net.Listener{l}, nil
}

func (d *daemon) socketDesc(ls []net.Listener) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.Addr().String())
	}
	return strings.Join(s, ",")
}

// printEnv prints the line a shell evaluates to use the agent, as
// ssh-agent does.
func (d *daemon) printEnv(ls []net.Listener) {
	if d.quiet {
		return
	}
	path := ls[0].Addr().String()
	if d.csh {
		fmt.Fprintf(d.e.stdout, "setenv SSH_AUTH_SOCK %s;\n", path)
	} else {
		fmt.Fprintf(d.e.stdout, "SSH_AUTH_SOCK=%s; export SSH_AUTH_SOCK;\n", path)
	}
	if f, ok := d.e.stdout.(*os.File); ok {
		f.Sync()
	}
}

// setIdentities serves the identities of a store snapshot, with their
// certificates (NAME-cert.pub beside the blob), and watches their PCRs.
func (d *daemon) setIdentities(snap sealstore.Snapshot) {
	var ids []agentsrv.Identity
	pcrSet := map[int]bool{}
	for _, en := range snap.Entries {
		if en.Err != nil {
			continue // the watcher logged it; the others keep working
		}
		id := agentsrv.Identity{Blob: en.Blob, Cert: d.certificate(en.Blob)}
		if ic, ok := d.f.cfg.Identities[en.Blob.Name]; ok {
			id.Confirm, id.Notify = ic.Confirm, ic.Notify
			if !d.restrict(&id, ic.Destinations) {
				continue
			}
		}
		ids = append(ids, id)
		for _, p := range en.Blob.Policy.Indexes() {
			pcrSet[p] = true
		}
	}
	if err := d.srv.SetIdentities(ids); err != nil {
		d.log.Warn("some identities were not loaded", "err", err)
	}
	pcrs := make([]int, 0, len(pcrSet))
	for p := range pcrSet {
		pcrs = append(pcrs, p)
	}
	slices.Sort(pcrs)
	d.pcrs.SetPCRs(pcrs)
	if len(snap.Changed) > 0 {
		d.log.Debug("store changed", "changed", snap.Changed)
	}
}

// certificate returns the OpenSSH certificate in NAME-cert.pub beside the
// blob, if there is one for the blob's key. It runs on the main loop, so
// it reads with safefile: a FIFO in its place (which would block the read,
// and with it signals and reloads) or a device is logged and skipped.
func (d *daemon) certificate(b *sealstore.Blob) *ssh.Certificate {
	path := filepath.Join(d.store.Dir(), b.Name+"-cert.pub")
	data, err := safefile.Read(path, maxKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		d.log.Warn("cannot read certificate", "path", path, "err", err)
		return nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	cert, ok := k.(*ssh.Certificate)
	if err != nil || !ok {
		d.log.Warn("not an OpenSSH certificate; ignored", "path", path)
		return nil
	}
	if !bytes.Equal(cert.Key.Marshal(), b.PublicKey.Marshal()) {
		d.log.Warn("certificate is for another key; ignored", "path", path, "name", b.Name)
		return nil
	}
	return cert
}

// pcrChanged passes PCR changes to the server, which drops the seeds of
// the identities bound to them and reports which no longer match.
func (d *daemon) pcrChanged(changes []pcrwatch.Change) {
	changed := make([]int, 0, len(changes))
	for _, c := range changes {
		changed = append(changed, c.PCR)
	}
	d.srv.UpdatePCRs(d.pcrs.Current(), changed)
}

// reload re-reads the config file (SIGHUP). Settings that need a restart
// (the TPM, the store, the socket) are reported, not applied.
func (d *daemon) reload() {
	path, explicit := d.f.config, d.f.config != ""
	if !explicit {
		path = config.DefaultPath()
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		d.log.Warn("config not reloaded; keeping the running one", "err", err)
		return
	}
	old := d.f.cfg.Identity.TPM
	now := cfg.Identity.TPM
	if now.Device != old.Device || now.PCRPollSecs != old.PCRPollSecs || now.TPMTimeoutSecs != old.TPMTimeoutSecs {
		d.log.Warn("config changed device, pcr_poll_secs or tpm_timeout_secs; restart icn-agent for them to take effect", "path", path)
	}
	if cfg.Audit != d.f.cfg.Audit || cfg.NotifyCommand != d.f.cfg.NotifyCommand || cfg.DesktopNotify != d.f.cfg.DesktopNotify {
		d.log.Warn("config changed audit, notify_command or desktop_notify; restart icn-agent for them to take effect (per-identity settings apply now)", "path", path)
	}
	d.srv.SetAutoLockTimeout(now.AutoLockTimeout())
	d.f.cfg = cfg
	d.log.Info("config reloaded; rescanning the store", "path", path, "auto_lock_timeout", now.AutoLockTimeout())
}

// boundedTPM gives each use of the TPM (a Run: the wait for the TPM and
// the commands) a deadline of timeout, within the caller's. Uses that may
// wait for a person in between (asking for a PIN) are bounded one by one,
// not as a whole.
type boundedTPM struct {
	tpm     *tpmdev.TPM
	timeout time.Duration
}

func (b boundedTPM) RunWithSRK(ctx context.Context, fn func(tpm transport.TPM, srk *tpmdev.SRK) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.tpm.RunWithSRK(ctx, fn)
}
