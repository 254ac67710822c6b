// Command agentbench measures how fast ssh-agents sign: it asks each agent
// socket in turn for N signatures of 64 bytes with one key, spread over a
// number of concurrent connections, and prints signatures per second and
// the latency of one request (median and 99th percentile). Given two
// sockets it also prints the ratio of the second's figures to the
// first's. scripts/bench.sh runs it against icn-agent and OpenSSH's
// ssh-agent holding the same key.
//
//	agentbench -sock icn=/tmp/a.sock -sock ssh-agent=/tmp/b.sock -key id.pub -n 20000 -c 1,8
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// dataSize is the size of the data signed, about that of a hash-based
// signing request.
const dataSize = 64

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

// target is one agent socket to measure.
type target struct {
	Label string
	Path  string
}

// sockList is the repeatable -sock flag: [LABEL=]PATH.
type sockList []target

func (s *sockList) String() string {
	parts := make([]string, len(*s))
	for i, t := range *s {
		parts[i] = t.Label + "=" + t.Path
	}
	return strings.Join(parts, ",")
}

func (s *sockList) Set(v string) error {
	t, err := parseTarget(v)
	if err != nil {
		return err
	}
	*s = append(*s, t)
	return nil
}

// parseTarget parses "[LABEL=]PATH"; without a label, the path is the
// label.
func parseTarget(v string) (target, error) {
	label, path, ok := strings.Cut(v, "=")
	if !ok {
		label, path = v, v
	}
	if label == "" || path == "" {
		return target{}, fmt.Errorf("bad -sock %q: want [LABEL=]PATH", v)
	}
	return target{Label: label, Path: path}, nil
}

// intList is a comma-separated list of positive integers.
type intList []int

func (l *intList) String() string {
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad number %q: want positive integers separated by commas", f)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

// config is the parsed command line.
type config struct {
	socks  []target
	key    ssh.PublicKey
	n      int
	conns  []int
	warmup int
}

func parseArgs(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("agentbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var socks sockList
	conns := intList{1}
	fs.Var(&socks, "sock", "agent socket `[LABEL=]PATH`; repeat to compare agents (ratios are against the first)")
	keyFile := fs.String("key", "", "public key `FILE` of the key to sign with (each agent must hold it)")
	n := fs.Int("n", 10000, "signatures per socket and connection count")
	fs.Var(&conns, "c", "concurrent connections, or a comma-separated list of counts to run in turn")
	warmup := fs.Int("warmup", 200, "unmeasured signatures per socket first (unseals a sealed key)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(socks) == 0 {
		return nil, errors.New("need at least one -sock")
	}
	if *keyFile == "" {
		return nil, errors.New("need -key PUBFILE")
	}
	if *n < 1 || *warmup < 0 {
		return nil, errors.New("-n must be positive and -warmup not negative")
	}
	data, err := os.ReadFile(*keyFile)
	if err != nil {
		return nil, err
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", *keyFile, err)
	}
	for _, c := range conns {
		if c > *n {
			return nil, fmt.Errorf("-c %d is more connections than -n %d signatures", c, *n)
		}
	}
	return &config{socks: socks, key: key, n: *n, conns: conns, warmup: *warmup}, nil
}

// result is one measurement: a socket at a connection count.
type result struct {
	target  target
	conns   int
	signs   int
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (r result) rate() float64 { return float64(r.signs) / r.elapsed.Seconds() }

func run(args []string, stdout io.Writer) error {
	cfg, err := parseArgs(args, os.Stderr)
	if err != nil {
		return err
	}
	var results []result
	for _, t := range cfg.socks {
		if err := warm(t, cfg.key, cfg.warmup); err != nil {
			return fmt.Errorf("%s: warm-up: %w", t.Label, err)
		}
	}
	for _, c := range cfg.conns {
		for _, t := range cfg.socks {
			r, err := bench(t, cfg.key, cfg.n, c)
			if err != nil {
				return fmt.Errorf("%s, %d connection(s): %w", t.Label, c, err)
			}
			results = append(results, r)
		}
	}
	return report(stdout, results)
}

// bench signs n times with key over conns connections to t and returns
// the figures.
func bench(t target, key ssh.PublicKey, n, conns int) (result, error) {
	r := result{target: t, conns: conns, signs: n}
	lats := make([][]time.Duration, conns)
	errs := make([]error, conns)
	clients := make([]agent.ExtendedAgent, conns)
	for i := range conns {
		c, err := net.Dial("unix", t.Path)
		if err != nil {
			return r, err
		}
		defer c.Close()
		clients[i] = agent.NewClient(c)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i, share := range split(n, conns) {
		wg.Go(func() {
			lats[i], errs[i] = signLoop(clients[i], key, share)
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	slices.Sort(r.lat)
	return r, nil
}

// warm signs n times on one connection, unmeasured.
func warm(t target, key ssh.PublicKey, n int) error {
	if n == 0 {
		return nil
	}
	_, err := bench(t, key, n, 1)
	return err
}

// signLoop asks for n signatures and returns each one's latency. The
// first signature is verified.
func signLoop(a agent.ExtendedAgent, key ssh.PublicKey, n int) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	data := make([]byte, dataSize)
	for i := range n {
		data[0], data[1], data[2], data[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		t0 := time.Now()
		sig, err := a.Sign(key, data)
		lat = append(lat, time.Since(t0))
		if err != nil {
			return nil, fmt.Errorf("signature %d: %w", i, err)
		}
		if i == 0 {
			if err := key.Verify(data, sig); err != nil {
				return nil, fmt.Errorf("the agent's signature does not verify: %w", err)
			}
		}
	}
	return lat, nil
}

// split divides n into parts shares that differ by at most one.
func split(n, parts int) []int {
	out := make([]int, parts)
	for i := range out {
		out[i] = n / parts
		if i < n%parts {
			out[i]++
		}
	}
	return out
}

// quantile returns the q-quantile (0 <= q <= 1) of sorted durations, by
// the nearest-rank method.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// report prints a table of results, then, for each connection count with
// more than one socket, each later socket's figures relative to the
// first's.
func report(w io.Writer, results []result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "agent\tconns\tsigns\tsigns/s\tp50\tp99\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t\n", r.target.Label, r.conns, r.signs, r.rate(),
			fmtDur(quantile(r.lat, 0.50)), fmtDur(quantile(r.lat, 0.99)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var first *result
	for i := range results {
		r := &results[i]
		if first == nil || first.conns != r.conns {
			first = r
			continue
		}
		fmt.Fprintf(w, "ratio %s/%s, %d conn(s): signs/s %.2f, p50 %.2f, p99 %.2f\n",
			r.target.Label, first.target.Label, r.conns, r.rate()/first.rate(),
			ratio(quantile(r.lat, 0.5), quantile(first.lat, 0.5)),
			ratio(quantile(r.lat, 0.99), quantile(first.lat, 0.99)))
	}
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// fmtDur prints a latency in microseconds with one decimal.
func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
}
