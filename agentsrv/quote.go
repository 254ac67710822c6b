package agentsrv

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/sealstore"
)

// Attester produces attestation evidence about a sealed identity: a TPM
// quote bound to nonce and the identity's key, over the identity's sealing
// PCRs and extraPCRs, with the identity's proof of possession made by
// sign (a raw Ed25519 signature of msg). The daemon implements it with
// attest and its TPM. nonce points into the connection's request buffer,
// which is wiped and reused once the request is answered: Quote must not
// keep it past its return.
type Attester interface {
	Quote(ctx context.Context, b *sealstore.Blob, nonce []byte, extraPCRs []int, sign func(msg []byte) ([]byte, error)) (*attest.Evidence, error)
}

// extQuote answers attest.Extension: evidence about one identity. The
// proof of possession is signed like any other request (unsealing if
// needed), so it fails while the agent is locked or the identity hidden.
func (c *conn) extQuote(contents []byte) ([]byte, error) {
	s := c.s
	if s.attester == nil {
		return nil, fmt.Errorf("agentsrv: %s: attestation is not configured", attest.Extension)
	}
	key, nonce, extra, err := attest.ParseAgentRequest(contents)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	locked, e := s.locked, s.byKey[string(key.Marshal())].sealed
	var blob *sealstore.Blob
	if e != nil && !e.hidden {
		blob = e.blob // guarded by s.mu, like hidden
	}
	s.mu.RUnlock()
	if locked {
		return nil, ErrLocked
	}
	if blob == nil {
		return nil, fmt.Errorf("agentsrv: %s: %w", attest.Extension, ErrNotFound)
	}
	c.debug("agentsrv: extension", slog.String("type", attest.Extension), slog.String("name", e.name), slog.String("fingerprint", e.fp))
	sign := func(msg []byte) ([]byte, error) {
		sig, err := c.SignWithFlags(blob.PublicKey, msg, 0)
		if err != nil {
			return nil, err
		}
		if sig.Format != ssh.KeyAlgoED25519 {
			return nil, fmt.Errorf("agentsrv: unexpected signature format %s", sig.Format)
		}
		return sig.Blob, nil
	}
	ev, err := s.attester.Quote(c.ctx, blob, nonce, extra, sign)
	if err != nil {
		s.log.Warn("agentsrv: quote failed", "name", e.name, "fingerprint", e.fp, "err", err)
		return nil, err
	}
	return attest.MarshalAgentReply(ev), nil
}
