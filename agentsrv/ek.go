package agentsrv

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/icn/icn-agent/attest"
)

// EKAttester is implemented by an Attester that can also show its TPM's
// endorsement key and open credentials made for its attestation key, for
// verifiers that root their trust in the TPM maker (attest.EKExtension,
// attest.ActivateExtension). Without it those extensions fail.
type EKAttester interface {
	// EKInfo returns the EK certificate, the EK and the attestation key.
	EKInfo(ctx context.Context) (*attest.EKInfo, error)
	// Activate opens a credential for the attestation key under the EK
	// and returns its secret.
	Activate(ctx context.Context, blob, secret []byte) ([]byte, error)
}

// ekAttester returns the configured attester's EKAttester, or an error.
func (s *Server) ekAttester(ext string) (EKAttester, error) {
	ea, ok := s.attester.(EKAttester)
	if !ok {
		return nil, fmt.Errorf("agentsrv: %s: endorsement key attestation is not configured", ext)
	}
	return ea, nil
}

// extEK answers attest.EKExtension. It reveals nothing secret (public keys
// and a certificate), but like quotes it is refused while the agent is
// locked.
func (s *Server) extEK(ctx context.Context, log *slog.Logger) ([]byte, error) {
	ea, err := s.ekAttester(attest.EKExtension)
	if err != nil {
		return nil, err
	}
	if s.isLocked() {
		return nil, ErrLocked
	}
	info, err := ea.EKInfo(ctx)
	if err != nil {
		log.Warn("agentsrv: reading the endorsement key failed", "err", err)
		return nil, err
	}
	return attest.MarshalEKReply(info), nil
}

// extActivate answers attest.ActivateExtension.
func (s *Server) extActivate(ctx context.Context, log *slog.Logger, contents []byte) ([]byte, error) {
	ea, err := s.ekAttester(attest.ActivateExtension)
	if err != nil {
		return nil, err
	}
	blob, secret, err := attest.ParseActivateRequest(contents)
	if err != nil {
		return nil, err
	}
	if s.isLocked() {
		return nil, ErrLocked
	}
	out, err := ea.Activate(ctx, blob, secret)
	if err != nil {
		log.Warn("agentsrv: credential activation failed", "err", err)
		return nil, err
	}
	return attest.MarshalActivateReply(out), nil
}

// isLocked reports whether the agent is locked.
func (s *Server) isLocked() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.locked
}
