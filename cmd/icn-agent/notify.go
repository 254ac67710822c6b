package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/icn/icn-agent/agentsrv"
)

// Announcing signatures (notify = true for an identity). The server calls
// Notify on the request path; notifier queues the event (a bounded queue:
// when it is full the event is dropped and counted, and the count logged
// as a warning once the queue moves again) and one goroutine announces
// them in turn:
//
//   - notify_command, if configured, run with /bin/sh -c and the details
//     in the environment: ICN_AGENT_EVENT (sign), ICN_AGENT_KEY (SHA256
//     fingerprint), ICN_AGENT_NAME, ICN_AGENT_BACKEND, ICN_AGENT_PEER_UID,
//     ICN_AGENT_PEER_PID, ICN_AGENT_PEER_EXE, ICN_AGENT_PEER_CMDLINE,
//     ICN_AGENT_DEST (host and host key fingerprint, empty if unknown),
//     ICN_AGENT_DATA_SHA256 and ICN_AGENT_TIME (RFC 3339);
//   - a freedesktop notification when desktop_notify is on and a D-Bus
//     session bus exists (DBUS_SESSION_BUS_ADDRESS), sent with gdbus (part
//     of GLib, on every desktop that shows notifications) or notify-send,
//     so that the agent takes no D-Bus library for one method call.
//
// Each announcement is bounded by notifyTimeout. Nothing here can slow a
// signature down.

const (
	notifyQueue   = 64
	notifyTimeout = 10 * time.Second
)

type notifier struct {
	command string
	desktop []string // the program and arguments before title and body; nil: none
	getenv  func(string) string
	log     *slog.Logger

	ch      chan agentsrv.SignEvent
	dropped atomic.Int64
}

// newNotifier returns the daemon's notifier, or nil when there is nowhere
// to announce to.
func newNotifier(command string, desktop bool, getenv func(string) string, log *slog.Logger) *notifier {
	n := &notifier{command: command, getenv: getenv, log: log, ch: make(chan agentsrv.SignEvent, notifyQueue)}
	if desktop && getenv("DBUS_SESSION_BUS_ADDRESS") != "" {
		if p, err := exec.LookPath("gdbus"); err == nil {
			n.desktop = []string{p, "call", "--session", "--dest", "org.freedesktop.Notifications",
				"--object-path", "/org/freedesktop/Notifications", "--method", "org.freedesktop.Notifications.Notify",
				"icn-agent", "0", "dialog-password"}
		} else if p, err := exec.LookPath("notify-send"); err == nil {
			n.desktop = []string{p, "--app-name=icn-agent", "--icon=dialog-password"}
		} else {
			log.Info("no gdbus or notify-send: signatures are not announced on the desktop")
		}
	}
	if n.command == "" && n.desktop == nil {
		return nil
	}
	return n
}

// Notify implements agentsrv.Notifier. It never blocks.
func (n *notifier) Notify(ev *agentsrv.SignEvent) {
	select {
	case n.ch <- *ev:
	default:
		n.dropped.Add(1)
	}
}

// Run announces queued events until ctx ends.
func (n *notifier) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-n.ch:
			if d := n.dropped.Swap(0); d > 0 {
				n.log.Warn("signature announcements dropped: too many at once", "count", d)
			}
			n.announce(ctx, &ev)
		}
	}
}

func (n *notifier) announce(ctx context.Context, ev *agentsrv.SignEvent) {
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	if n.command != "" {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", n.command)
		cmd.Env = append(os.Environ(), notifyEnv(ev)...)
		n.run(cmd, "notify_command")
	}
	if n.desktop != nil {
		title := "icn-agent: " + ev.Name + " signed"
		body := fmt.Sprintf("%s\nfor %s", ev.Key, ev.Peer)
		if d := ev.Dest.String(); d != "" {
			body += "\nto " + d
		}
		args := append([]string{}, n.desktop[1:]...)
		if len(n.desktop) > 3 { // gdbus: summary, body, actions, hints, timeout
			args = append(args, title, body, "[]", "{}", "5000")
		} else {
			args = append(args, title, body)
		}
		n.run(exec.CommandContext(ctx, n.desktop[0], args...), "desktop notification")
	}
}

func (n *notifier) run(cmd *exec.Cmd, what string) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		n.log.Warn("cannot announce a signature", "via", what, "err", err, "output", string(out))
	}
}

// notifyEnv is the environment notify_command gets.
func notifyEnv(ev *agentsrv.SignEvent) []string {
	env := []string{
		"ICN_AGENT_EVENT=sign",
		"ICN_AGENT_KEY=" + ev.Key,
		"ICN_AGENT_NAME=" + ev.Name,
		"ICN_AGENT_BACKEND=" + ev.Backend,
		"ICN_AGENT_DEST=" + ev.Dest.String(),
		"ICN_AGENT_DATA_SHA256=" + fmt.Sprintf("%x", ev.DataSHA256),
		"ICN_AGENT_TIME=" + ev.Time.UTC().Format(time.RFC3339),
	}
	if p := ev.Peer; p.Known {
		env = append(env,
			"ICN_AGENT_PEER_UID="+strconv.Itoa(p.UID),
			"ICN_AGENT_PEER_PID="+strconv.Itoa(p.PID),
			"ICN_AGENT_PEER_EXE="+p.Exe,
			"ICN_AGENT_PEER_CMDLINE="+p.Cmdline,
		)
	}
	return env
}
