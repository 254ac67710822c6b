package notify

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/icn/icn-agent/agentsrv"
)

func event() *agentsrv.SignEvent {
	return &agentsrv.SignEvent{
		Time:       time.Date(2026, 11, 30, 7, 0, 0, 0, time.FixedZone("CET", 3600)),
		Key:        "SHA256:abc",
		Name:       "work",
		Backend:    "sealed",
		Peer:       agentsrv.Peer{Known: true, UID: 1000, PID: 4242, Exe: "/usr/bin/ssh", Cmdline: "ssh host"},
		Dest:       agentsrv.Destination{HostKey: "SHA256:def", Host: "host"},
		DataSHA256: sha256.Sum256([]byte("data")),
		Outcome:    agentsrv.OutcomeSigned,
	}
}

func TestEnv(t *testing.T) {
	ev := event()
	want := []string{
		"ICN_AGENT_EVENT=sign",
		"ICN_AGENT_KEY=SHA256:abc",
		"ICN_AGENT_NAME=work",
		"ICN_AGENT_BACKEND=sealed",
		"ICN_AGENT_DEST=host (SHA256:def)",
		"ICN_AGENT_DATA_SHA256=3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
		"ICN_AGENT_TIME=2026-11-30T06:00:00Z",
		"ICN_AGENT_PEER_UID=1000",
		"ICN_AGENT_PEER_PID=4242",
		"ICN_AGENT_PEER_EXE=/usr/bin/ssh",
		"ICN_AGENT_PEER_CMDLINE=ssh host",
	}
	if got := env(ev); !slices.Equal(got, want) {
		t.Errorf("env =\n%q\nwant\n%q", got, want)
	}
	// An unknown peer leaves the peer variables out.
	ev.Peer = agentsrv.Peer{}
	if got := env(ev); !slices.Equal(got, want[:7]) {
		t.Errorf("env without a peer = %q", got)
	}
}

func TestNewNowhere(t *testing.T) {
	getenv := func(string) string { return "" }
	if n := New("", false, getenv, nil); n != nil {
		t.Error("a notifier with nothing configured")
	}
	// desktop_notify without a session bus: nowhere to announce to.
	if n := New("", true, getenv, nil); n != nil {
		t.Error("a desktop notifier without DBUS_SESSION_BUS_ADDRESS")
	}
}

// TestCommand runs notify_command through Notify and Run. The command
// writes its environment into a FIFO: the test's read returns when the
// command has written and exited, with no polling.
func TestCommand(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "out")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	n := New(`env | grep ^ICN_AGENT_ | sort > "$OUT"`, false, func(string) string { return "" }, nil)
	if n == nil {
		t.Fatal("no notifier for a command")
	}
	t.Setenv("OUT", fifo)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	n.Notify(event())

	got := make(chan string, 1)
	go func() {
		f, err := os.Open(fifo) // blocks until the command opens it
		if err != nil {
			got <- err.Error()
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f) // EOF when the command's shell closes it
		got <- string(b)
	}()
	var out string
	select {
	case out = <-got:
	case <-time.After(Timeout):
		t.Fatal("notify_command did not run")
	}
	want := slices.Clone(env(event()))
	slices.Sort(want)
	if strings.TrimSpace(out) != strings.Join(want, "\n") {
		t.Errorf("notify_command saw\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestAnnounceFile: announce returns once the command has finished, so
// the file it wrote is complete when announce returns.
func TestAnnounceFile(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	t.Setenv("OUT", out)
	n := New(`printf '%s signed for %s\n' "$ICN_AGENT_NAME" "$ICN_AGENT_PEER_CMDLINE" > "$OUT"`, false, func(string) string { return "" }, nil)
	n.announce(context.Background(), event())
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "work signed for ssh host\n" {
		t.Errorf("the command wrote %q", b)
	}
}

// TestNotifyDrops: Notify never blocks; what does not fit in the queue is
// counted.
func TestNotifyDrops(t *testing.T) {
	n := New("true", false, func(string) string { return "" }, nil)
	for range Queue + 3 {
		n.Notify(event())
	}
	if d := n.dropped.Load(); d != 3 {
		t.Errorf("dropped %d; want 3", d)
	}
}
