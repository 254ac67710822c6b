package daemon

import (
	"context"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/metrics"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// openTPM opens the selected TPM for the agent, reporting every command
// to m if set.
func (a *Agent) openTPM(ctx context.Context, m *metrics.Metrics) (*tpmdev.TPM, error) {
	spec, err := tpmdev.ParseSpec(a.opts.TPM)
	if err != nil {
		return nil, err
	}
	// The agent owns the TPM for long: it flushes what dead clients left
	// on a swtpm. A command run beside it must not (it would flush the
	// agent's storage root key).
	opts := tpmdev.Options{Logger: a.log, FlushStale: true, StateDir: a.opts.StateDir,
		CommandTimeout: a.cfg.Identity.TPM.TPMTimeout()}
	if m != nil {
		opts.Observe = m.ObserveTPM
	}
	return tpmdev.Open(ctx, spec, opts)
}

// boundedTPM gives each use of the TPM (a Run: the wait for the TPM and
// the commands) a deadline of timeout, within the caller's. Uses that may
// wait for a person in between (asking for a PIN) are bounded one by one,
// not as a whole.
type boundedTPM struct {
	tpm     *tpmdev.TPM
	timeout time.Duration
}

func (b boundedTPM) RunWithSRK(ctx context.Context, fn func(tpm transport.TPM, srk *tpmdev.SRK) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.tpm.RunWithSRK(ctx, fn)
}

// noTPM is the Unsealer of an agent that found no TPM: every unseal fails
// with the reason.
type noTPM struct{ err error }

func (n noTPM) Unseal(context.Context, *sealstore.Blob, []byte) error { return n.err }
