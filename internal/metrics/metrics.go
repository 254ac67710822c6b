// Package metrics counts what icn-agent does and exports it to Prometheus.
//
// A [Metrics] gathers three kinds of figures:
//
//   - events the agent reports as they happen: unseals (by result),
//     signatures (sealed identity or software key), failed sign requests
//     (by reason) and PCR changes. Metrics implements agentsrv.Metrics:
//     give it to agentsrv.Config.Metrics;
//   - every TPM command, with its latency and how it failed: give
//     [Metrics.ObserveTPM] to tpmdev.Options.Observe;
//   - the agent's state, read when scraped: cached seeds, identities,
//     identities whose PCRs no longer match, locked. Give the server's
//     Status method to [Metrics.WatchServer].
//
// [Metrics.Handler] serves them in the Prometheus text format, with the
// Go runtime's and the process's own metrics (heap, goroutines, RSS, open
// files). [Listen] opens the listener for it and refuses addresses other
// than loopback unless told otherwise: the figures tell when and how much
// the user signs.
//
// The exported series:
//
//	icn_agent_seals_total                         seals (TPM2_Create) this process made
//	icn_agent_unseals_total{result}               unseals: success, pcr_mismatch, srk_mismatch,
//	                                              timeout, tpm_error, other
//	icn_agent_unseal_duration_seconds             histogram of unseals, failed ones too
//	icn_agent_signs_total{key}                    signatures made: key is sealed or software
//	icn_agent_sign_failures_total{key,reason}     failed sign requests: reason is locked,
//	                                              not_found or an unseal result
//	icn_agent_pcr_changes_total{pcr}              PCR change events the agent saw
//	icn_agent_pcr_mismatch_identities             identities whose PCRs no longer match
//	icn_agent_cached_seeds                        identities whose seed is unsealed now
//	icn_agent_identities                          sealed identities served
//	icn_agent_locked                              1 while the agent is locked
//	icn_agent_tpm_command_duration_seconds{command}    histogram of TPM commands
//	icn_agent_tpm_command_errors_total{command,error}  TPM_RC_* names, timeout,
//	                                                   malformed or io
//
// No label ever holds an identity name or anything a user chose: label
// values come from fixed sets, so the number of series is bounded.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// Namespace prefixes every metric of the agent's own.
const Namespace = "icn_agent"

// Unseal results and sign failure reasons, the values of the result and
// reason labels.
const (
	ResultSuccess     = "success"
	ReasonPCRMismatch = "pcr_mismatch"
	ReasonSRKMismatch = "srk_mismatch"
	ReasonTimeout     = "timeout"
	ReasonTPMError    = "tpm_error"
	ReasonOther       = "other"
	ReasonLocked      = "locked"
	ReasonNotFound    = "not_found"
)

var unsealResults = []string{ResultSuccess, ReasonPCRMismatch, ReasonSRKMismatch, ReasonTimeout, ReasonTPMError, ReasonOther}

// Metrics is the agent's set of collectors, in a registry of its own. Its
// methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	seals          prometheus.Counter
	unseals        *prometheus.CounterVec
	unsealSeconds  prometheus.Histogram
	signs          *prometheus.CounterVec
	signSealed     prometheus.Counter // signs{key="sealed"}, resolved once
	signSoftware   prometheus.Counter
	signFailures   *prometheus.CounterVec
	pcrChanges     *prometheus.CounterVec
	tpmSeconds     *prometheus.HistogramVec
	tpmErrors      *prometheus.CounterVec
	tpmSecondsByCC sync.Map // tpm2.TPMCC -> prometheus.Observer

	mu     sync.Mutex
	status func() *agentsrv.Status
}

var _ agentsrv.Metrics = (*Metrics)(nil)
var _ agentsrv.MetricsReporter = (*Metrics)(nil)

// New returns the agent's collectors, registered with the Go runtime and
// process collectors in a new registry.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.seals = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "seals_total",
		Help: "Seeds sealed (successful TPM2_Create commands) by this process.",
	})
	m.unseals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "unseals_total",
		Help: "Unseals of a sealed identity's seed, by result.",
	}, []string{"result"})
	m.unsealSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "unseal_duration_seconds",
		Help:    "Time an unseal took, failed ones included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9), // 0.5 ms .. 33 s
	})
	m.signs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "signs_total",
		Help: "Signatures made, with a sealed identity or a software key.",
	}, []string{"key"})
	m.signFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "sign_failures_total",
		Help: "Sign requests that failed, by key kind and reason.",
	}, []string{"key", "reason"})
	m.pcrChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "pcr_changes_total",
		Help: "Changes of PCRs that served identities are bound to.",
	}, []string{"pcr"})
	m.tpmSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "tpm_command_duration_seconds",
		Help:    "Latency of TPM commands, by command.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 0.1 ms .. 26 s
	}, []string{"command"})
	m.tpmErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "tpm_command_errors_total",
		Help: "TPM commands that failed: the TPM's response code, or timeout, malformed (a cut response) or io.",
	}, []string{"command", "error"})

	for _, r := range unsealResults {
		m.unseals.WithLabelValues(r)
	}
	m.signSealed = m.signs.WithLabelValues("sealed")
	m.signSoftware = m.signs.WithLabelValues("software")

	m.reg.MustRegister(m.seals, m.unseals, m.unsealSeconds, m.signs, m.signFailures, m.pcrChanges,
		m.tpmSeconds, m.tpmErrors, stateCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry holding every collector, for tests and
// for gathering.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// WatchServer makes the state gauges read status (agentsrv.Server.Status)
// at each scrape.
func (m *Metrics) WatchServer(status func() *agentsrv.Status) {
	m.mu.Lock()
	m.status = status
	m.mu.Unlock()
}

// Unsealed counts an unseal by its result; see Reason.
func (m *Metrics) Unsealed(err error, d time.Duration) {
	m.unseals.WithLabelValues(Reason(err)).Inc()
	m.unsealSeconds.Observe(d.Seconds())
}

// Signed counts a signature.
func (m *Metrics) Signed(sealed bool) {
	if sealed {
		m.signSealed.Inc()
	} else {
		m.signSoftware.Inc()
	}
}

// SignFailed counts a failed sign request by its reason; see Reason.
func (m *Metrics) SignFailed(sealed bool, err error) {
	key := "software"
	if sealed {
		key = "sealed"
	}
	m.signFailures.WithLabelValues(key, Reason(err)).Inc()
}

// PCRsChanged counts a change of each PCR in changed.
func (m *Metrics) PCRsChanged(changed []int) {
	for _, p := range changed {
		if p >= 0 && p < tpmdev.NumPCRs {
			m.pcrChanges.WithLabelValues(strconv.Itoa(p)).Inc()
		}
	}
}

// ObserveTPM records one TPM command; it has the signature of
// tpmdev.Options.Observe.
func (m *Metrics) ObserveTPM(cc tpm2.TPMCC, d time.Duration, rc tpm2.TPMRC, err error) {
	obs, ok := m.tpmSecondsByCC.Load(cc)
	if !ok {
		obs, _ = m.tpmSecondsByCC.LoadOrStore(cc, m.tpmSeconds.WithLabelValues(CommandName(cc)))
	}
	obs.(prometheus.Observer).Observe(d.Seconds())
	switch {
	case err != nil:
		m.tpmErrors.WithLabelValues(CommandName(cc), transportError(err)).Inc()
	case rc != tpm2.TPMRCSuccess:
		m.tpmErrors.WithLabelValues(CommandName(cc), rcName(rc)).Inc()
	case cc == tpm2.TPMCCCreate:
		m.seals.Inc()
	}
}

// Reason classifies an unseal or sign error for the result and reason
// labels: "success" for nil, then locked, not_found, pcr_mismatch,
// srk_mismatch, timeout (a TPM command or the request ran out of time),
// tpm_error (the TPM refused, or its device failed or answered garbage),
// or other.
func Reason(err error) string {
	var rc tpm2.TPMRC
	var fmt1 tpm2.TPMFmt1Error
	var errno syscall.Errno
	switch {
	case err == nil:
		return ResultSuccess
	case errors.Is(err, agentsrv.ErrLocked):
		return ReasonLocked
	case errors.Is(err, agentsrv.ErrNotFound):
		return ReasonNotFound
	case errors.Is(err, tpmseal.ErrPCRMismatch):
		return ReasonPCRMismatch
	case errors.Is(err, tpmseal.ErrSRKMismatch):
		return ReasonSRKMismatch
	case errors.Is(err, tpmdev.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case errors.As(err, &rc), errors.As(err, &fmt1), errors.Is(err, tpmdev.ErrMalformedResponse), errors.As(err, &errno):
		return ReasonTPMError
	}
	return ReasonOther
}

// transportError names an error the TPM transport returned.
func transportError(err error) string {
	switch {
	case errors.Is(err, tpmdev.ErrTimeout):
		return "timeout"
	case errors.Is(err, tpmdev.ErrMalformedResponse):
		return "malformed"
	}
	return "io"
}

// rcName returns the TPM_RC_* name of rc, without handle or parameter
// numbers, or its hex value.
func rcName(rc tpm2.TPMRC) string {
	s := rc.Error()
	if i := strings.IndexAny(s, ": ("); i > 0 && strings.HasPrefix(s, "TPM_RC_") {
		return s[:i]
	}
	return fmt.Sprintf("0x%03x", uint32(rc))
}

// commandNames names the TPM commands icn-agent sends.
var commandNames = map[tpm2.TPMCC]string{
	tpm2.TPMCCCreatePrimary:    "CreatePrimary",
	tpm2.TPMCCCreate:           "Create",
	tpm2.TPMCCLoad:             "Load",
	tpm2.TPMCCUnseal:           "Unseal",
	tpm2.TPMCCStartAuthSession: "StartAuthSession",
	tpm2.TPMCCPolicyPCR:        "PolicyPCR",
	tpm2.TPMCCPolicyGetDigest:  "PolicyGetDigest",
	tpm2.TPMCCFlushContext:     "FlushContext",
	tpm2.TPMCCReadPublic:       "ReadPublic",
	tpm2.TPMCCPCRRead:          "PCR_Read",
	tpm2.TPMCCPCRExtend:        "PCR_Extend",
	tpm2.TPMCCGetCapability:    "GetCapability",
	tpm2.TPMCCEvictControl:     "EvictControl",
	tpm2.TPMCCQuote:            "Quote",
	tpm2.TPMCCCertify:          "Certify",
	tpm2.TPMCCStartup:          "Startup",
	tpm2.TPMCCContextSave:      "ContextSave",
	tpm2.TPMCCContextLoad:      "ContextLoad",
	tpm2.TPMCCGetRandom:        "GetRandom",
	tpm2.TPMCCSign:             "Sign",
	tpm2.TPMCCImport:           "Import",
	tpm2.TPMCCDuplicate:        "Duplicate",
}

// CommandName returns the name of a TPM command code, as used in the
// command label: "Unseal", "PCR_Read", or the code in hex.
func CommandName(cc tpm2.TPMCC) string {
	if n, ok := commandNames[cc]; ok {
		return n
	}
	return fmt.Sprintf("0x%03x", uint32(cc))
}

// stateCollector reports the agent's state at each scrape.
type stateCollector struct{ m *Metrics }

var (
	descCachedSeeds = prometheus.NewDesc(Namespace+"_cached_seeds",
		"Sealed identities whose seed is unsealed and cached now.", nil, nil)
	descIdentities = prometheus.NewDesc(Namespace+"_identities",
		"Sealed identities the agent serves.", nil, nil)
	descMismatch = prometheus.NewDesc(Namespace+"_pcr_mismatch_identities",
		"Sealed identities whose PCRs no longer hold their sealing-time values: they will not unseal.", nil, nil)
	descLocked = prometheus.NewDesc(Namespace+"_locked",
		"1 while the agent is locked (ssh-add -x), else 0.", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCachedSeeds
	ch <- descIdentities
	ch <- descMismatch
	ch <- descLocked
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	status := c.m.status
	c.m.mu.Unlock()
	var st agentsrv.Status
	if status != nil {
		st = *status()
	}
	var cached, mismatch int
	for _, is := range st.Identities {
		if is.Unsealed {
			cached++
		}
		if len(is.PCRMismatch) > 0 {
			mismatch++
		}
	}
	locked := 0.0
	if st.Locked {
		locked = 1
	}
	ch <- prometheus.MustNewConstMetric(descCachedSeeds, prometheus.GaugeValue, float64(cached))
	ch <- prometheus.MustNewConstMetric(descIdentities, prometheus.GaugeValue, float64(len(st.Identities)))
	ch <- prometheus.MustNewConstMetric(descMismatch, prometheus.GaugeValue, float64(mismatch))
	ch <- prometheus.MustNewConstMetric(descLocked, prometheus.GaugeValue, locked)
}

// MetricsJSON returns the agent's own metrics (those named icn_agent_*)
// as a JSON object: a number for an unlabelled counter or gauge, else an
// object from label set ("name=value,...", sorted) to number; histograms
// give {"count": N, "sum": S}.
func (m *Metrics) MetricsJSON() ([]byte, error) {
	fams, err := m.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("metrics: gather: %w", err)
	}
	out := map[string]any{}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), Namespace+"_") {
			continue
		}
		byLabels := map[string]any{}
		var single any
		for _, mt := range f.GetMetric() {
			v := value(mt)
			if len(mt.GetLabel()) == 0 {
				single = v
				continue
			}
			byLabels[labelKey(mt.GetLabel())] = v
		}
		if single != nil {
			out[f.GetName()] = single
		} else {
			out[f.GetName()] = byLabels
		}
	}
	return json.Marshal(out)
}

// value returns a sample's value for MetricsJSON.
func value(mt *dto.Metric) any {
	switch {
	case mt.GetCounter() != nil:
		return finite(mt.GetCounter().GetValue())
	case mt.GetGauge() != nil:
		return finite(mt.GetGauge().GetValue())
	case mt.GetHistogram() != nil:
		h := mt.GetHistogram()
		return map[string]any{"count": h.GetSampleCount(), "sum": finite(h.GetSampleSum())}
	}
	return nil
}

// finite keeps NaN and infinities, which JSON cannot carry, out.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func labelKey(ls []*dto.LabelPair) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// Listen opens a TCP listener for the metrics endpoint at addr
// (HOST:PORT). Unless allowAny is set, HOST must be a loopback address or
// "localhost", and the address actually bound must be loopback: the
// metrics tell when and how often the user signs, and the endpoint has no
// authentication.
func Listen(addr string, allowAny bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen address %q: want HOST:PORT, e.g. 127.0.0.1:9477", addr)
	}
	if !allowAny && !isLoopbackHost(host) {
		return nil, fmt.Errorf("metrics: %q is not a loopback address; the metrics endpoint has no authentication (use 127.0.0.1 or [::1], or --metrics-listen-any to expose it)", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if tcp, ok := l.Addr().(*net.TCPAddr); !allowAny && (!ok || !tcp.IP.IsLoopback()) {
		l.Close()
		return nil, fmt.Errorf("metrics: %q bound %v, which is not loopback", addr, l.Addr())
	}
	return l, nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Serve serves the metrics at /metrics on l until ctx is done, then shuts
// the server down and returns nil. Other paths get 404.
func (m *Metrics) Serve(ctx context.Context, l net.Listener, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	log.Info("serving metrics", "addr", l.Addr().String(), "path", "/metrics")
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return fmt.Errorf("metrics: serve: %w", err)
}
