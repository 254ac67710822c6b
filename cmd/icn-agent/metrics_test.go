package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServeMetrics runs icn-agent serve with --metrics-listen, signs, and
// reads the counters from the Prometheus endpoint and from status --json.
func TestServeMetrics(t *testing.T) {
	d := newDaemonEnv(t, "sim")
	_, pub := d.importKey(t, "work")
	addr := freeLoopbackPort(t)
	p := d.serve(t, 1, "--metrics-listen", addr)
	ag := p.client(t).Agent()
	for range 3 {
		if _, err := ag.Sign(pub, []byte("metrics")); err != nil {
			t.Fatal(err)
		}
	}

	body := httpGet(t, "http://"+addr+"/metrics")
	for _, w := range []struct {
		sample string
		want   float64
	}{
		{`icn_agent_signs_total{key="sealed"}`, 3},
		{`icn_agent_unseals_total{result="success"}`, 1},
		{`icn_agent_cached_seeds`, 1},
		{`icn_agent_identities`, 1},
		{`icn_agent_tpm_command_duration_seconds_count{command="Unseal"}`, 1},
	} {
		if got, ok := promSample(body, w.sample); !ok || got != w.want {
			t.Errorf("%s = %v (present %v); want %v", w.sample, got, ok, w.want)
		}
	}

	var st struct {
		Metrics map[string]any `json:"metrics"`
	}
	if err := json.Unmarshal([]byte(d.run(t, "status", "--json", "-a", p.sock)), &st); err != nil {
		t.Fatal(err)
	}
	signs, _ := st.Metrics["icn_agent_signs_total"].(map[string]any)
	if signs["key=sealed"] != 3.0 {
		t.Errorf("status --json metrics: signs %v; want key=sealed 3 (%v)", signs, st.Metrics)
	}
}

// TestServeMetricsRefusesNonLoopback: without --metrics-listen-any, only
// loopback addresses are accepted, before anything is opened.
func TestServeMetricsRefusesNonLoopback(t *testing.T) {
	d := newDaemonEnv(t, "sim")
	for _, addr := range []string{"0.0.0.0:9477", ":9477"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, d.bin, "serve", "-a", d.dir+"/agent.sock", "--metrics-listen", addr)
		cmd.Env = d.env
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "not a loopback address") {
			t.Errorf("serve --metrics-listen %s: %v\n%s", addr, err, out)
		}
	}
}

// freeLoopbackPort returns 127.0.0.1:PORT with a port free right now.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	rsp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(rsp.Body)
	if err != nil || rsp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, rsp.Status, err)
	}
	return string(b)
}

// promSample returns the value of the sample named exactly s (name and
// labels) in a Prometheus text exposition.
func promSample(body, s string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), s+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}
