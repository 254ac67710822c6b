package metrics_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/internal/metrics"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmfault"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, metrics.ResultSuccess},
		{fmt.Errorf("x: %w", agentsrv.ErrLocked), metrics.ReasonLocked},
		{fmt.Errorf("x: %w", agentsrv.ErrNotFound), metrics.ReasonNotFound},
		{fmt.Errorf("agentsrv: unseal a: %w", &tpmseal.PCRMismatchError{Name: "a", PCRs: []int{7}}), metrics.ReasonPCRMismatch},
		{fmt.Errorf("sealstore: unseal a: %w", tpmseal.ErrSRKMismatch), metrics.ReasonSRKMismatch},
		{fmt.Errorf("sealstore: unseal a: %w", tpmdev.ErrTimeout), metrics.ReasonTimeout},
		{context.DeadlineExceeded, metrics.ReasonTimeout},
		{fmt.Errorf("load: %w", tpm2.TPMRCLockout), metrics.ReasonTPMError},
		{fmt.Errorf("load: %w", tpm2.TPMRC(0x18b)), metrics.ReasonTPMError}, // TPM_RC_HANDLE, handle 1
		{fmt.Errorf("x: %w", tpmdev.ErrMalformedResponse), metrics.ReasonTPMError},
		{fmt.Errorf("write /dev/tpmrm0: %w", syscall.EIO), metrics.ReasonTPMError},
		{agentsrv.ErrSeedMismatch, metrics.ReasonOther},
		{errors.New("something else"), metrics.ReasonOther},
	}
	for _, tt := range tests {
		if got := metrics.Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q; want %q", tt.err, got, tt.want)
		}
	}
}

func TestListen(t *testing.T) {
	tests := []struct {
		addr    string
		wantErr string
	}{
		{"127.0.0.1:0", ""},
		{"localhost:0", ""},
		{"0.0.0.0:0", "not a loopback address"},
		{":0", "not a loopback address"},
		{"192.0.2.1:9477", "not a loopback address"},
		{"example.com:9477", "not a loopback address"},
		{"127.0.0.1", "want HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			l, err := metrics.Listen(tt.addr, false)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("Listen(%q) succeeded; want an error", tt.addr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Listen(%q) = %v; want %q", tt.addr, err, tt.wantErr)
			}
		})
	}
}

func TestCommandNames(t *testing.T) {
	if got := metrics.CommandName(tpm2.TPMCCUnseal); got != "Unseal" {
		t.Errorf("CommandName(Unseal) = %q", got)
	}
	if got := metrics.CommandName(0x1ff); got != "0x1ff" {
		t.Errorf("CommandName(0x1ff) = %q", got)
	}
}

// tpmUnsealer unseals with sealstore, as the daemon does.
type tpmUnsealer struct{ tpm tpmseal.TPM }

func (u tpmUnsealer) Unseal(ctx context.Context, b *sealstore.Blob, dst []byte) error {
	return tpmseal.Unseal(ctx, u.tpm, b, dst)
}

// TestScrape runs an agent on the simulator with metrics, signs, fails in
// several ways, and reads the counters back over HTTP and through the
// metrics@icn-agent extension.
func TestScrape(t *testing.T) {
	// agent.ServeAgent logs every failed request to the standard logger.
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	m := metrics.New()
	inj := tpmfault.New()
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{
		StateDir: t.TempDir(), Observe: m.ObserveTPM,
		Wrap: func(next transport.TPM) transport.TPM { return inj.Wrap(next) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	blob, err := tpmseal.Seal(context.Background(), tpm, seed, tpmseal.SealOptions{Name: "work", PCRs: []int{7, 16}})
	if err != nil {
		t.Fatal(err)
	}

	srv := agentsrv.New(agentsrv.Config{
		Unsealer: tpmUnsealer{tpm},
		Metrics:  m,
		Logger:   slog.New(slog.DiscardHandler),
	})
	defer srv.Close()
	m.WatchServer(srv.Status)
	if err := srv.SetIdentities([]agentsrv.Identity{{Blob: blob}}); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	al, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, al)

	ml, err := metrics.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx, ml, slog.New(slog.DiscardHandler)) }()

	cl, err := client.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ag := cl.Agent()
	for range 3 {
		sig, err := ag.Sign(blob.PublicKey, []byte("data"))
		if err != nil {
			t.Fatal(err)
		}
		if err := blob.PublicKey.Verify([]byte("data"), sig); err != nil {
			t.Fatal(err)
		}
	}
	// A key the agent does not have.
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(other)
	if _, err := ag.Sign(otherPub, []byte("data")); err == nil {
		t.Fatal("signed with a key the agent does not have")
	}
	// The TPM refuses the next unseal.
	srv.DropAll()
	inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Code(tpm2.TPMRCLockout)))
	if _, err := ag.Sign(blob.PublicKey, []byte("data")); err == nil {
		t.Fatal("signed although the TPM refused to unseal")
	}
	// And the next one works again: the seed is cached at scrape time.
	if _, err := ag.Sign(blob.PublicKey, []byte("data")); err != nil {
		t.Fatal(err)
	}
	// PCR 16 moves: the identity no longer matches.
	srv.UpdatePCRs(map[int][]byte{7: blob.Policy.PCRs[0].Value, 16: bytes.Repeat([]byte{1}, 32)}, []int{16})

	body := scrape(t, "http://"+ml.Addr().String()+"/metrics")
	for _, w := range []struct {
		sample string
		want   float64
	}{
		{`icn_agent_seals_total`, 1},
		{`icn_agent_signs_total{key="sealed"}`, 4},
		{`icn_agent_signs_total{key="software"}`, 0},
		{`icn_agent_sign_failures_total{key="software",reason="not_found"}`, 1},
		{`icn_agent_sign_failures_total{key="sealed",reason="tpm_error"}`, 1},
		{`icn_agent_unseals_total{result="success"}`, 2},
		{`icn_agent_unseals_total{result="tpm_error"}`, 1},
		{`icn_agent_unseals_total{result="pcr_mismatch"}`, 0},
		{`icn_agent_unseal_duration_seconds_count`, 3},
		{`icn_agent_pcr_changes_total{pcr="16"}`, 1},
		{`icn_agent_pcr_mismatch_identities`, 1},
		{`icn_agent_cached_seeds`, 0}, // dropped by the PCR change
		{`icn_agent_identities`, 1},
		{`icn_agent_locked`, 0},
		{`icn_agent_tpm_command_duration_seconds_count{command="Unseal"}`, 3},
		{`icn_agent_tpm_command_duration_seconds_count{command="Create"}`, 1},
		{`icn_agent_tpm_command_errors_total{command="Unseal",error="TPM_RC_LOCKOUT"}`, 1},
	} {
		got, ok := sample(body, w.sample)
		if !ok || got != w.want {
			t.Errorf("%s = %v (present %v); want %v", w.sample, got, ok, w.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := sample(body, name); !ok {
			t.Errorf("%s missing", name)
		}
	}

	// The same counters through the agent socket.
	raw, err := cl.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	signs, _ := js["icn_agent_signs_total"].(map[string]any)
	if signs["key=sealed"] != 4.0 || js["icn_agent_seals_total"] != 1.0 {
		t.Errorf("metrics extension: signs %v, seals %v; want 4 and 1 (%s)", signs, js["icn_agent_seals_total"], raw)
	}
	if _, ok := js["go_goroutines"]; ok {
		t.Errorf("metrics extension reports runtime metrics: %s", raw)
	}

	// Locked: the gauge says so, the extension refuses.
	if err := ag.Lock([]byte("pass")); err != nil {
		t.Fatal(err)
	}
	if got, _ := sample(scrape(t, "http://"+ml.Addr().String()+"/metrics"), "icn_agent_locked"); got != 1 {
		t.Errorf("icn_agent_locked = %v while locked; want 1", got)
	}
	if _, err := cl.Metrics(); err == nil {
		t.Error("metrics extension answered while locked")
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// TestNoMetricsExtensionWithout: an agent without metrics answers the
// extension as unsupported and does not list it.
func TestNoMetricsExtensionWithout(t *testing.T) {
	srv := agentsrv.New(agentsrv.Config{Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	c1, c2 := net.Pipe()
	defer c1.Close()
	go srv.ServeConn(context.Background(), c2)
	ag := agent.NewClient(c1)
	if _, err := ag.Extension(agentsrv.ExtMetrics, nil); !errors.Is(err, agent.ErrExtensionUnsupported) {
		t.Fatalf("metrics extension without metrics: %v; want unsupported", err)
	}
	reply, err := ag.Extension(agentsrv.ExtQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(reply, []byte(agentsrv.ExtMetrics)) {
		t.Fatal("query lists the metrics extension without metrics")
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	rsp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(rsp.Body)
	if err != nil || rsp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %v", url, rsp.Status, err)
	}
	return string(body)
}

// sample returns the value of the sample whose name and labels are
// exactly s in a Prometheus text exposition.
func sample(body, s string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, s+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}
