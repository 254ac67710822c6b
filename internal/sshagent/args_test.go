package sshagent

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestConvtime(t *testing.T) {
	for in, want := range map[string]time.Duration{"10": 10 * time.Second, "1h30m": 90 * time.Minute, "2d": 48 * time.Hour, "1w": 7 * 24 * time.Hour, "5m10": 5*time.Minute + 10*time.Second} {
		got, err := Convtime(in)
		if err != nil || got != want {
			t.Errorf("Convtime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "10q", "-1", "99999999999"} {
		if _, err := Convtime(in); err == nil {
			t.Errorf("Convtime(%q) succeeded", in)
		}
	}
}

func TestParseSSHAgentArgs(t *testing.T) {
	o, err := Parse([]string{"-Ds", "-t1h", "-a", "/tmp/s", "-P/*", "--upstream=/u1", "--upstream", "/u2"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.Foreground || !o.SH || o.Lifetime != time.Hour || o.Socket != "/tmp/s" || o.Allowlist != "/*" || len(o.Upstreams) != 2 || len(o.Command) != 0 {
		t.Errorf("parsed %+v", o)
	}
	o, err = Parse([]string{"-t", "5", "sh", "-c", "ssh-add -l"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Command) != 3 || o.Command[1] != "-c" {
		t.Errorf("command %q, want sh -c ...", o.Command)
	}
	for _, bad := range [][]string{{"-c", "-s"}, {"-x"}, {"-t"}, {"-E", "sha1"}, {"-D", "-d"}, {"-k", "sh"}} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestUpstreams: --upstream wins over the config's; -P and -O are for
// the private agent only.
func TestUpstreams(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ups, stop, err := Upstreams(&Options{Upstreams: []string{"/flag"}}, []string{"/config"}, t.TempDir(), log)
	if err != nil || len(ups) != 1 || ups[0] != "/flag" {
		t.Errorf("with --upstream: %q, %v", ups, err)
	}
	stop()
	ups, stop, err = Upstreams(&Options{}, []string{"/config"}, t.TempDir(), log)
	if err != nil || len(ups) != 1 || ups[0] != "/config" {
		t.Errorf("with configured upstreams: %q, %v", ups, err)
	}
	stop()
	var ue *UsageError
	if _, _, err := Upstreams(&Options{Allowlist: "/usr/*"}, []string{"/config"}, t.TempDir(), log); !errors.As(err, &ue) {
		t.Errorf("-P with upstreams: %v; want a UsageError", err)
	}
}
