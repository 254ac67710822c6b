package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		n, parts int
		want     []int
	}{
		{10, 1, []int{10}},
		{10, 3, []int{4, 3, 3}},
		{8, 8, []int{1, 1, 1, 1, 1, 1, 1, 1}},
		{20000, 8, []int{2500, 2500, 2500, 2500, 2500, 2500, 2500, 2500}},
	} {
		if got := split(tc.n, tc.parts); !slices.Equal(got, tc.want) {
			t.Errorf("split(%d, %d) = %v, want %v", tc.n, tc.parts, got, tc.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.5, 50}, {0.99, 99}, {1, 100}} {
		if got := quantile(d, tc.q); got != tc.want {
			t.Errorf("quantile(1..100, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("quantile of one = %v, want 7", got)
	}
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("quantile of none = %v, want 0", got)
	}
}

func TestParseArgs(t *testing.T) {
	key := filepath.Join(t.TempDir(), "id.pub")
	line := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDMb+5uMNTkwaO6Lg/9EB4l8rrxi8ed+BtteDwbtXrH8 x\n"
	if err := os.WriteFile(key, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseArgs([]string{"-sock", "icn=/a.sock", "-sock", "/b.sock", "-key", key, "-n", "100", "-c", "1,8"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []target{{"icn", "/a.sock"}, {"/b.sock", "/b.sock"}}
	if !slices.Equal(cfg.socks, want) || !slices.Equal(cfg.conns, []int{1, 8}) || cfg.n != 100 {
		t.Errorf("parsed %+v", cfg)
	}
	for _, bad := range [][]string{
		{"-key", key},                           // no socket
		{"-sock", "/a"},                         // no key
		{"-sock", "=/a", "-key", key},           // empty label
		{"-sock", "/a", "-key", key, "-c", "0"}, // zero connections
		{"-sock", "/a", "-key", key, "-n", "4", "-c", "8"},
		{"-sock", "/a", "-key", "/nonexistent"},
	} {
		if _, err := parseArgs(bad, io.Discard); err == nil {
			t.Errorf("parseArgs(%q) succeeded", bad)
		}
	}
}

func TestReport(t *testing.T) {
	lat := func(v ...time.Duration) []time.Duration { return v }
	a, b := target{"icn", "/a"}, target{"ssh-agent", "/b"}
	results := []result{
		{a, 1, 1000, time.Second, lat(10 * time.Microsecond)},
		{b, 1, 1000, time.Second / 2, lat(5 * time.Microsecond)},
		{a, 8, 1000, time.Second / 4, lat(20 * time.Microsecond)},
		{b, 8, 1000, time.Second / 4, lat(40 * time.Microsecond)},
	}
	var out bytes.Buffer
	if err := report(&out, results); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ratio ssh-agent/icn, 1 conn(s): signs/s 2.00, p50 0.50, p99 0.50\n",
		"ratio ssh-agent/icn, 8 conn(s): signs/s 1.00, p50 2.00, p99 2.00\n",
		"10.0µs",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
