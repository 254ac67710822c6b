// Package tpmtrace wraps a TPM transport to watch what crosses it: a
// Counter counts commands by code, a Recorder keeps every command and
// response. Tests use them to prove how many TPM commands an operation
// costs and that no secret ever crosses the bus in clear.
package tpmtrace

import (
	"bytes"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// Counter counts the commands sent through it, by command code.
type Counter struct {
	next transport.TPM

	mu     sync.Mutex
	counts map[tpm2.TPMCC]int
	total  int
}

// NewCounter returns a Counter that forwards to next.
func NewCounter(next transport.TPM) *Counter {
	return &Counter{next: next, counts: map[tpm2.TPMCC]int{}}
}

// Send forwards cmd and counts it.
func (c *Counter) Send(cmd []byte) ([]byte, error) {
	c.mu.Lock()
	c.counts[tpmdev.CommandCode(cmd)]++
	c.total++
	c.mu.Unlock()
	return c.next.Send(cmd)
}

// Count returns how many commands with code cc were sent.
func (c *Counter) Count(cc tpm2.TPMCC) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[cc]
}

// Total returns how many commands were sent.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Snapshot returns the counts so far by command code.
func (c *Counter) Snapshot() map[tpm2.TPMCC]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[tpm2.TPMCC]int, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	return m
}

// Exchange is one command and its response.
type Exchange struct {
	Command, Response []byte
}

// Recorder keeps a copy of every command and response sent through it.
type Recorder struct {
	next transport.TPM

	mu  sync.Mutex
	log []Exchange
}

// NewRecorder returns a Recorder that forwards to next.
func NewRecorder(next transport.TPM) *Recorder { return &Recorder{next: next} }

// Send forwards cmd and records the exchange.
func (r *Recorder) Send(cmd []byte) ([]byte, error) {
	sent := bytes.Clone(cmd) // as it crossed the bus, before anyone changes it
	rsp, err := r.next.Send(cmd)
	r.mu.Lock()
	r.log = append(r.log, Exchange{Command: sent, Response: bytes.Clone(rsp)})
	r.mu.Unlock()
	return rsp, err
}

// Exchanges returns what was recorded so far.
func (r *Recorder) Exchanges() []Exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Exchange(nil), r.log...)
}

// Contains reports whether secret appears anywhere in a recorded command
// or response.
func (r *Recorder) Contains(secret []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.log {
		if bytes.Contains(e.Command, secret) || bytes.Contains(e.Response, secret) {
			return true
		}
	}
	return false
}
