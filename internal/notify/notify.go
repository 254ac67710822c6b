// Package notify announces the agent's signatures to the person at the
// machine, for identities configured with notify = true.
//
// The agent's server calls Notify on the request path (it is an
// agentsrv.Notifier); a Notifier queues the event and Run announces the
// queued events one at a time. The queue is bounded: when it is full the
// event is dropped and counted, and the count is logged as a warning once
// the queue moves again. Nothing here can slow a signature down.
//
// An event is announced in two ways, each optional:
//
//   - a command (the config's notify_command), run with /bin/sh -c and the
//     details in its environment (below);
//   - a freedesktop notification (desktop_notify), when a D-Bus session bus
//     exists (DBUS_SESSION_BUS_ADDRESS), sent with gdbus (part of GLib, on
//     every desktop that shows notifications) or else notify-send, so that
//     the agent takes no D-Bus library for one method call.
//
// The command's environment is the agent's, and:
//
//	ICN_AGENT_EVENT         sign
//	ICN_AGENT_KEY           the key's SHA256 fingerprint
//	ICN_AGENT_NAME          the identity's name or the key's comment
//	ICN_AGENT_BACKEND       sealed or software
//	ICN_AGENT_DEST          host and host key fingerprint; empty if unknown
//	ICN_AGENT_DATA_SHA256   the SHA-256 of the signed data, hex
//	ICN_AGENT_TIME          when, RFC 3339 in UTC
//	ICN_AGENT_PEER_UID      the process that asked, when known:
//	ICN_AGENT_PEER_PID      its uid, pid, executable
//	ICN_AGENT_PEER_EXE      and command line
//	ICN_AGENT_PEER_CMDLINE
//
// Each announcement is bounded by Timeout; a command still running then is
// killed with its whole process group.
package notify

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

const (
	// Queue is how many events may wait to be announced.
	Queue = 64
	// Timeout bounds one announcement.
	Timeout = 10 * time.Second
)

// Notifier announces signatures; see the package documentation.
type Notifier struct {
	command string
	desktop []string // the program and its arguments before title and body; nil: none
	log     *slog.Logger

	ch      chan agentsrv.SignEvent
	dropped atomic.Int64
}

var _ agentsrv.Notifier = (*Notifier)(nil)

// New returns a Notifier running command (empty: none) and, if desktop is
// set and getenv finds a session bus, sending desktop notifications. It
// returns nil when there is nowhere to announce to. log (nil: discard)
// receives announcements that failed.
func New(command string, desktop bool, getenv func(string) string, log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{command: command, log: log, ch: make(chan agentsrv.SignEvent, Queue)}
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

// Notify queues ev (agentsrv.Notifier). It never blocks: when the queue is
// full, the event is dropped and counted.
func (n *Notifier) Notify(ev *agentsrv.SignEvent) {
	select {
	case n.ch <- *ev:
	default:
		n.dropped.Add(1)
	}
}

// Run announces queued events until ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
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

// announce announces ev in every configured way and returns when they
// are done (or Timeout has passed).
func (n *Notifier) announce(ctx context.Context, ev *agentsrv.SignEvent) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if n.command != "" {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", n.command)
		cmd.Env = append(os.Environ(), env(ev)...)
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

// run runs cmd in a process group of its own, so that a timeout kills
// whatever it started too.
func (n *Notifier) run(cmd *exec.Cmd, via string) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		n.log.Warn("cannot announce a signature", "via", via, "err", err, "output", string(out))
	}
}

// env is the environment the command gets besides the agent's own.
func env(ev *agentsrv.SignEvent) []string {
	e := []string{
		"ICN_AGENT_EVENT=sign",
		"ICN_AGENT_KEY=" + ev.Key,
		"ICN_AGENT_NAME=" + ev.Name,
		"ICN_AGENT_BACKEND=" + ev.Backend,
		"ICN_AGENT_DEST=" + ev.Dest.String(),
		"ICN_AGENT_DATA_SHA256=" + fmt.Sprintf("%x", ev.DataSHA256),
		"ICN_AGENT_TIME=" + ev.Time.UTC().Format(time.RFC3339),
	}
	if p := ev.Peer; p.Known {
		e = append(e,
			"ICN_AGENT_PEER_UID="+strconv.Itoa(p.UID),
			"ICN_AGENT_PEER_PID="+strconv.Itoa(p.PID),
			"ICN_AGENT_PEER_EXE="+p.Exe,
			"ICN_AGENT_PEER_CMDLINE="+p.Cmdline,
		)
	}
	return e
}
