// Package daemon is the running agent: it opens the identity store and
// the TPM, serves the store's identities on the agent's sockets with
// agentsrv, and keeps what it serves in step with the machine until its
// context ends.
//
// The parts, and who drives them:
//
//   - the store watcher (sealstore.Watcher) reports identities added,
//     changed or removed; the agent then serves the new set, each identity
//     with its certificate (NAME-cert.pub beside the blob) and its
//     configured confirm, notify and destinations settings;
//   - the PCR watcher (pcrwatch) reads the PCRs the identities are bound
//     to; a change drops the cached seeds bound to it;
//   - the dictionary-attack cache (unlock.DACache) reads the TPM's lockout
//     counter in the background, so that status never waits for the TPM;
//   - the audit log (internal/audit) records every sign request, with
//     checkpoints stamped by the TPM's attestation key, and the notifier
//     (internal/notify) announces signatures;
//   - an optional Prometheus endpoint (internal/metrics).
//
// One goroutine, Run's loop, applies store snapshots, PCR changes, config
// reloads (Reload) and DropAll; every other part runs in a goroutine of
// its own and reports back through channels. Every use of the TPM on
// behalf of a request is bounded by tpm_timeout_secs, the wait for the
// TPM included, so a wedged TPM fails requests instead of hanging them.
//
// Signals are the caller's business: cmd/icn-agent maps SIGHUP to Reload,
// SIGUSR1 to DropAll and SIGINT/SIGTERM to cancelling Run's context. So
// are the words around errors: Run returns ErrNoRuntimeDir, a
// *ListenError wrapping agentsrv.ErrAgentRunning or agentsrv.ErrUnsafeDir,
// and ErrAuditLog, and the command adds what to do about them.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/attesttpm"
	"github.com/icn/icn-agent/internal/config"
	"github.com/icn/icn-agent/internal/metrics"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/unlock"
	"github.com/icn/icn-agent/pcrwatch"
	"github.com/icn/icn-agent/sealstore"
)

// Options configure an Agent. Config is required (the zero Config is not
// the defaults: load one with config.Load); the rest have defaults.
type Options struct {
	// Config is the running config. ConfigFile is where Reload reads the
	// next one; empty means config.DefaultPath(), which may be missing.
	Config     config.Config
	ConfigFile string
	// TPM selects the TPM (tpmdev.ParseSpec); Store is the identity
	// store's directory.
	TPM   string
	Store string
	// StateDir keeps the audit log and the simulator's seed; empty means
	// tpmdev.DefaultStateDir().
	StateDir string

	// Listeners, if set, are the sockets to serve. Otherwise the agent
	// serves systemd's sockets if it was socket activated, else a new
	// socket at Socket (default DefaultSocket).
	Listeners []net.Listener
	Socket    string
	// Ready, if set, is called once the agent serves, with the path of
	// its first socket.
	Ready func(socket string)

	// PCRPoll is how often the PCRs are read; zero means the config's.
	PCRPoll time.Duration
	// MetricsAddr, if set, is where Prometheus metrics are served
	// (metrics.Listen); MetricsAnyAddr allows a non-loopback address.
	MetricsAddr    string
	MetricsAnyAddr bool
	// Upstreams are other agents' sockets (agentsrv.Config.Upstreams);
	// DefaultLifetime is the lifetime of keys added without one.
	Upstreams       []string
	DefaultLifetime time.Duration
	// TPMOptional serves keys added with ssh-add (and the upstreams')
	// when no TPM can be opened, instead of failing (ssh-agent).
	TPMOptional bool
	// Advise, if set, may add to the error of a failed unseal of b, an
	// identity in store, what the user can do about it
	// (unlock.Unsealer.Advise).
	Advise func(store *sealstore.Store, b *sealstore.Blob, err error) error

	// Getenv reads the environment (SSH_ASKPASS, HOME for known_hosts,
	// XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS); nil means os.Getenv.
	Getenv func(string) string
	// Logger receives the agent's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Agent is the running agent; see the package documentation.
type Agent struct {
	opts   Options
	cfg    config.Config // the running config; only Run's loop touches it
	log    *slog.Logger
	getenv func(string) string
	reload chan struct{}
	drop   chan struct{}

	// Set by Run.
	store *sealstore.Store
	srv   *agentsrv.Server
	pcrs  *pcrwatch.Watcher
}

// New returns an Agent for opts. Nothing is opened before Run.
func New(opts Options) *Agent {
	a := &Agent{opts: opts, cfg: opts.Config, log: opts.Logger, getenv: opts.Getenv,
		reload: make(chan struct{}, 1), drop: make(chan struct{}, 1)}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.getenv == nil {
		a.getenv = os.Getenv
	}
	if a.opts.StateDir == "" {
		a.opts.StateDir = tpmdev.DefaultStateDir()
	}
	if a.opts.PCRPoll == 0 {
		a.opts.PCRPoll = a.cfg.Identity.TPM.PCRPoll()
	}
	return a
}

// Reload asks Run to re-read the config file and rescan the store.
// Settings that need a restart (the TPM, the store, the socket, the audit
// log, the notifier) are reported, not applied. It does not block; an
// agent without a TPM ignores it.
func (a *Agent) Reload() { poke(a.reload) }

// DropAll asks Run to wipe every cached seed. It does not block.
func (a *Agent) DropAll() { poke(a.drop) }

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends (it then returns nil, once every seed is
// wiped and its socket removed) or a part fails.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Seeds are cached in locked memory; if the kernel refuses to lock it
	// (RLIMIT_MEMLOCK), they still work but may be swapped out: say so.
	if probe, err := secmem.New(64); err == nil {
		if !probe.Locked() {
			a.log.Warn("cannot lock memory: cached seeds may be swapped to disk; raise RLIMIT_MEMLOCK (ulimit -l, or LimitMEMLOCK= in the systemd unit)")
		}
		probe.Destroy()
	}

	store, err := sealstore.Open(a.opts.Store)
	if err != nil {
		return err
	}
	a.store = store
	var m *metrics.Metrics
	var metricsL net.Listener
	if a.opts.MetricsAddr != "" {
		m = metrics.New()
		if metricsL, err = metrics.Listen(a.opts.MetricsAddr, a.opts.MetricsAnyAddr); err != nil {
			return err
		}
		defer metricsL.Close()
	}

	var p parts
	tpm, err := a.openTPM(ctx, m)
	switch {
	case err != nil && !a.opts.TPMOptional:
		return err
	case err != nil:
		a.log.Warn("no TPM reachable: sealed identities are unavailable; serving keys added with ssh-add", "err", err)
		p.srv = agentsrv.Config{
			Unsealer:        noTPM{err},
			Logger:          a.log,
			AskPass:         a.getenv("SSH_ASKPASS"),
			DefaultLifetime: a.opts.DefaultLifetime,
			Upstreams:       a.opts.Upstreams,
		}
	default:
		defer tpm.Close()
		ctl, err := a.withTPM(tpm, &p)
		if err != nil {
			return err
		}
		defer ctl.close(a.log, a.cfg.Identity.TPM.TPMTimeout()) // after the server's Close below
		if m != nil {
			p.srv.Metrics = m
		}
	}
	a.srv = agentsrv.New(p.srv)
	defer a.srv.Close()
	if tpm != nil {
		// Serve the identities from the first connection on: the
		// watcher's first snapshot comes only once it runs.
		entries, err := store.List()
		if err != nil {
			return err
		}
		a.setIdentities(sealstore.Snapshot{Entries: entries})
	}
	if m != nil {
		m.WatchServer(a.srv.Status)
		p.tasks = append(p.tasks, task{"metrics", func(ctx context.Context) error { return m.Serve(ctx, metricsL, a.log) }})
	}

	listeners, err := a.listen()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(listeners)+len(p.tasks))
	start := func(name string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	for _, l := range listeners {
		start("agent", func(ctx context.Context) error { return a.srv.Serve(ctx, l) })
	}
	for _, t := range p.tasks {
		start(t.name, t.run)
	}
	defer wg.Wait()
	defer cancel()

	if tpm != nil {
		t := a.cfg.Identity.TPM
		a.log.Info("icn-agent serving", "socket", socketDesc(listeners), "store", store.Dir(), "tpm", tpm.Spec().String(),
			"auto_lock_timeout", t.AutoLockTimeout(), "pcr_poll", a.opts.PCRPoll, "tpm_timeout", t.TPMTimeout())
	} else {
		a.log.Info("icn-agent serving without a TPM", "socket", socketDesc(listeners))
	}
	if a.opts.Ready != nil {
		a.opts.Ready(listeners[0].Addr().String())
	}

	for {
		select {
		case snap, ok := <-p.updates:
			if ok {
				a.setIdentities(snap)
			}
		case c, ok := <-p.changes:
			if ok {
				a.pcrChanged(c)
			}
		case <-a.reload:
			if p.rescan != nil {
				a.reloadConfig()
				p.rescan()
			}
		case <-a.drop:
			a.srv.DropAll()
			a.log.Info("dropped every cached seed")
		case err := <-errs:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// parts are what Run wires around the server: its config, the
// goroutines besides the sockets, and what the loop listens to (nil
// without a TPM).
type parts struct {
	srv     agentsrv.Config
	tasks   []task
	updates <-chan sealstore.Snapshot
	changes <-chan []pcrwatch.Change
	rescan  func()
}

// withTPM sets up the parts of an agent with a TPM: the server's
// unsealer, attester and lockout counter, each use of the TPM bounded by
// tpm_timeout_secs; the audit log, notifier and known_hosts lookup
// (control, which the caller closes after the server); and the store and
// PCR watchers. What the agent reports without a request (the
// dictionary-attack counter, for status and metrics) is read in the
// background and served from memory.
func (a *Agent) withTPM(tpm *tpmdev.TPM, p *parts) (*control, error) {
	timeout := a.cfg.Identity.TPM.TPMTimeout()
	bounded := boundedTPM{tpm: tpm, timeout: timeout}
	da := unlock.NewDACache(bounded, a.log)
	attester := attesttpm.NewAttester(bounded, attesttpm.AKPath(a.store.Dir()), a.store, a.log)
	ctl, err := a.control(attester)
	if err != nil {
		return nil, err
	}
	p.srv = agentsrv.Config{
		Unsealer: &unlock.Unsealer{
			TPM:      bounded,
			Store:    a.store,
			Askpass:  a.getenv("SSH_ASKPASS"),
			Log:      a.log,
			Advise:   a.advise,
			AfterPIN: da.Poke,
		},
		Attester:        attester,
		Lockout:         da.Lockout,
		Logger:          a.log,
		AutoLockTimeout: a.cfg.Identity.TPM.AutoLockTimeout(),
		AskPass:         a.getenv("SSH_ASKPASS"),
		Audit:           ctl.auditor,
		Notify:          ctl.notifier,
		KnownHost:       ctl.knownHost,
		DefaultLifetime: a.opts.DefaultLifetime,
		Upstreams:       a.opts.Upstreams,
	}
	watcher := sealstore.NewWatcher(a.store, a.log)
	a.pcrs = pcrwatch.New(pcrwatch.TPMReader(tpm), a.opts.PCRPoll, a.log)
	a.pcrs.SetTimeout(timeout)
	p.updates, p.changes, p.rescan = watcher.Updates(), a.pcrs.Changes(), watcher.Rescan
	p.tasks = append(p.tasks, task{"store watcher", watcher.Run}, task{"PCR watcher", a.pcrs.Run},
		task{"dictionary-attack reader", da.Run})
	if ctl.notify != nil {
		p.tasks = append(p.tasks, task{"notifier", ctl.notify.Run})
	}
	return ctl, nil
}

// advise is Options.Advise for the agent's store.
func (a *Agent) advise(b *sealstore.Blob, err error) error {
	if a.opts.Advise == nil {
		return err
	}
	return a.opts.Advise(a.store, b, err)
}

// task is a part of the agent run in a goroutine of its own.
type task struct {
	name string
	run  func(context.Context) error
}

// socketDesc lists the listeners' addresses for the log.
func socketDesc(ls []net.Listener) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.Addr().String())
	}
	return strings.Join(s, ",")
}

// reloadConfig re-reads the config file. Settings that need a restart are
// reported, not applied.
func (a *Agent) reloadConfig() {
	path, explicit := a.opts.ConfigFile, a.opts.ConfigFile != ""
	if !explicit {
		path = config.DefaultPath()
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		a.log.Warn("config not reloaded; keeping the running one", "err", err)
		return
	}
	old := a.cfg.Identity.TPM
	now := cfg.Identity.TPM
	if now.Device != old.Device || now.PCRPollSecs != old.PCRPollSecs || now.TPMTimeoutSecs != old.TPMTimeoutSecs {
		a.log.Warn("config changed device, pcr_poll_secs or tpm_timeout_secs; restart icn-agent for them to take effect", "path", path)
	}
	if cfg.Audit != a.cfg.Audit || cfg.NotifyCommand != a.cfg.NotifyCommand || cfg.DesktopNotify != a.cfg.DesktopNotify {
		a.log.Warn("config changed audit, notify_command or desktop_notify; restart icn-agent for them to take effect (per-identity settings apply now)", "path", path)
	}
	a.srv.SetAutoLockTimeout(now.AutoLockTimeout())
	a.cfg = cfg
	a.log.Info("config reloaded; rescanning the store", "path", path, "auto_lock_timeout", now.AutoLockTimeout())
}
