package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/daemon"
	"github.com/icn/icn-agent/internal/secmem"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "serve",
		Args:    "[-a SOCKET] [-c] [--upstream SOCKET]... [--pcr-poll DURATION] [--metrics-listen HOST:PORT]",
		Summary: "Run the agent in the foreground, serving every sealed identity on SSH_AUTH_SOCK.",
		Run:     runServe,
	})
}

func runServe(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("serve")
	socket := fs.String("socket", "", "socket path (default $XDG_RUNTIME_DIR/icn-agent/agent.sock; ignored under systemd socket activation)")
	fs.StringVar(socket, "a", "", "alias for --socket")
	csh := fs.Bool("c", false, "print the environment in csh syntax")
	pcrPoll := fs.Duration("pcr-poll", 0, "how often to read the PCRs identities are bound to (default from config, else 30s)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, ADDR a loopback HOST:PORT such as 127.0.0.1:9477 (default: no metrics endpoint)")
	metricsAny := fs.Bool("metrics-listen-any", false, "allow --metrics-listen on a non-loopback address (the endpoint has no authentication)")
	var upstreams cli.Strings
	fs.Var(&upstreams, "upstream", "socket of another agent whose keys are listed after icn-agent's own and used through it (repeatable; default from config)")
	_, err := commands.ParseN(e, c, fs, args, 0, "serve takes no arguments")
	if err != nil {
		return err
	}
	f.daemon = true
	if err := f.setup(e); err != nil {
		return err
	}
	if *pcrPoll < 0 {
		return cli.Usagef("--pcr-poll must be positive")
	}
	if *metricsAny && *metricsListen == "" {
		return cli.Usagef("--metrics-listen-any needs --metrics-listen")
	}
	if err := daemonProcess(f); err != nil {
		return err
	}
	ups := []string(upstreams)
	if len(ups) == 0 {
		ups = f.cfg.Upstream
	}
	opts := daemonOptions(e, f)
	opts.Socket, opts.PCRPoll, opts.Upstreams = *socket, *pcrPoll, ups
	opts.MetricsAddr, opts.MetricsAnyAddr = *metricsListen, *metricsAny
	opts.Ready = func(path string) { printSocketEnv(e, path, *csh) }
	sigs, stopSignals := daemonSignals()
	defer stopSignals()
	err = runDaemon(f.log, opts, sigs, nil)
	var le *daemon.ListenError
	switch {
	case errors.As(err, &le) && errors.Is(err, agentsrv.ErrAgentRunning):
		return cli.WithHint(err, fmt.Sprintf("use the running agent (SSH_AUTH_SOCK=%s), stop it, or pass -a with another path", le.Path))
	case errors.Is(err, agentsrv.ErrUnsafeDir):
		return cli.WithHint(err, "put the socket in a directory only you can write to, such as the default $XDG_RUNTIME_DIR/icn-agent/agent.sock")
	case errors.Is(err, daemon.ErrNoRuntimeDir):
		return cli.WithHint(err, "pass one with -a (for example -a ~/.ssh/icn-agent.sock), or start icn-agent from a login session that sets XDG_RUNTIME_DIR")
	}
	return err
}

// daemonProcess prepares the process to hold seeds: logs, the standard
// logger's included, go to f's logger, and the process is hardened (no
// core dumps, no ptrace).
func daemonProcess(f *common) error {
	slog.SetDefault(f.log)
	if err := secmem.HardenProcess(); err != nil {
		return fmt.Errorf("harden process: %w", err)
	}
	return nil
}

// daemonOptions are the agent's options from the common flags and config.
func daemonOptions(e *cli.Env, f *common) daemon.Options {
	return daemon.Options{
		Config: f.cfg, ConfigFile: f.config, TPM: f.tpm, Store: f.store,
		Getenv: e.Getenv, Logger: f.log,
		Advise: adviseUnseal,
	}
}

// daemonSignals catches the signals runDaemon handles from now on, so that
// none arriving once a socket exists can kill the process before it
// removes it. Call it before the socket is made; stop ends the catching.
func daemonSignals() (sigs chan os.Signal, stop func()) {
	sigs = make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	return sigs, func() { signal.Stop(sigs) }
}

// runDaemon runs the agent until SIGINT or SIGTERM on sigs (from
// daemonSignals), or until stop is closed: SIGHUP reloads the config and
// rescans the store, SIGUSR1 drops every cached seed. The hints for the
// listening errors are the caller's: serve and ssh-agent listen
// differently.
func runDaemon(lg *slog.Logger, opts daemon.Options, sigs <-chan os.Signal, stop <-chan struct{}) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := daemon.New(opts)
	go func() {
		for {
			select {
			case sig := <-sigs:
				switch sig {
				case syscall.SIGHUP:
					a.Reload()
				case syscall.SIGUSR1:
					a.DropAll()
				default:
					lg.Info("shutting down", "signal", sig.String())
					cancel()
					return
				}
			case <-stop:
				lg.Info("shutting down")
				cancel()
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	err := a.Run(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil // stopped as asked, also while starting
	case errors.Is(err, daemon.ErrAuditLog):
		return cli.WithHint(err, "the audit log of signatures is on by default; fix the directory, or set audit = false at the top of config.toml to run without it")
	}
	return err
}

// printSocketEnv prints the line a shell evaluates to use the agent, as
// ssh-agent does.
func printSocketEnv(e *cli.Env, path string, csh bool) {
	if csh {
		fmt.Fprintf(e.Stdout, "setenv SSH_AUTH_SOCK %s;\n", path)
	} else {
		fmt.Fprintf(e.Stdout, "SSH_AUTH_SOCK=%s; export SSH_AUTH_SOCK;\n", path)
	}
	if f, ok := e.Stdout.(*os.File); ok {
		f.Sync()
	}
}
