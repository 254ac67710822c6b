package agentsrv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// softKey is a key added with ssh-add, held in ordinary memory as
// OpenSSH's agent holds it. All fields are guarded by Server.mu.
type softKey struct {
	signer   ssh.Signer
	wire     []byte // the listed key: the certificate if there is one
	baseWire []byte // the plain public key
	comment  string
	fp       string
	expire   time.Time // wall clock, zero for none
	timer    *time.Timer
	confirm  bool
}

func (k *softKey) stopTimer() {
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
}

// askPassTimeout bounds how long a confirmation prompt may wait for the
// user.
const askPassTimeout = 2 * time.Minute

// addSoft adds or replaces a software key.
func (s *Server) addSoft(key agent.AddedKey) error {
	if len(key.ConstraintExtensions) > 0 {
		return fmt.Errorf("agentsrv: unsupported key constraint %q", key.ConstraintExtensions[0].ExtensionName)
	}
	if key.ConfirmBeforeUse && s.askPass == "" {
		return errors.New("agentsrv: the confirm constraint (ssh-add -c) needs an askpass program, and none is configured")
	}
	signer, err := ssh.NewSignerFromKey(key.PrivateKey)
	if err != nil {
		return fmt.Errorf("agentsrv: add key: %w", err)
	}
	baseWire := signer.PublicKey().Marshal()
	if key.Certificate != nil {
		if signer, err = ssh.NewCertSigner(key.Certificate, signer); err != nil {
			return fmt.Errorf("agentsrv: add key: %w", err)
		}
	}
	k := &softKey{
		signer:   signer,
		wire:     signer.PublicKey().Marshal(),
		baseWire: baseWire,
		comment:  key.Comment,
		fp:       ssh.FingerprintSHA256(signer.PublicKey()),
		confirm:  key.ConfirmBeforeUse,
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked {
		return ErrLocked
	}
	for _, e := range s.sealed {
		if string(e.pubWire) == string(baseWire) {
			return fmt.Errorf("agentsrv: refusing to add a copy of sealed identity %q: it is served from the TPM", e.name)
		}
	}
	if key.LifetimeSecs > 0 {
		life := time.Duration(key.LifetimeSecs) * time.Second
		k.expire = s.wallNow().Add(life)
		k.timer = time.AfterFunc(life, func() { s.removeSoftKey(k, "lifetime expired") })
	}
	if i := slices.IndexFunc(s.soft, func(o *softKey) bool { return string(o.wire) == string(k.wire) }); i >= 0 {
		s.soft[i].stopTimer()
		s.soft[i] = k
	} else {
		s.soft = append(s.soft, k)
	}
	s.byKey[string(k.wire)] = keyRef{soft: k}
	s.log.Info("agentsrv: software key added", "fingerprint", k.fp, "type", signer.PublicKey().Type(),
		"lifetime", time.Duration(key.LifetimeSecs)*time.Second, "confirm", k.confirm)
	return nil
}

// removeSoftKey removes k if it is still held.
func (s *Server) removeSoftKey(k *softKey, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeSoftLocked(k, why)
}

func (s *Server) removeSoftLocked(k *softKey, why string) {
	i := slices.Index(s.soft, k)
	if i < 0 {
		return
	}
	k.stopTimer()
	s.soft = slices.Delete(s.soft, i, i+1)
	if ref := s.byKey[string(k.wire)]; ref.soft == k {
		delete(s.byKey, string(k.wire))
	}
	s.log.Info("agentsrv: software key removed", "fingerprint", k.fp, "reason", why)
}

// expireSoftLocked removes the software keys whose lifetime has passed by
// the wall clock. s.mu must be held for writing.
func (s *Server) expireSoftLocked(now time.Time) {
	for _, k := range slices.Clone(s.soft) {
		if !k.expire.IsZero() && !now.Before(k.expire) {
			s.removeSoftLocked(k, "lifetime expired")
		}
	}
}

// signSoft signs with a software key, after asking for confirmation if
// the key was added with the confirm constraint.
func (s *Server) signSoft(ctx context.Context, k *softKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	if k.confirm {
		if err := s.confirm(ctx, k); err != nil {
			return nil, err
		}
		// The key may have been removed, or the agent locked, while
		// the user was asked.
		s.mu.RLock()
		held := !s.locked && slices.Contains(s.soft, k)
		s.mu.RUnlock()
		if !held {
			return nil, fmt.Errorf("%w: key %s went away during confirmation", ErrNotFound, k.fp)
		}
	}
	if flags == 0 {
		return k.signer.Sign(rand.Reader, data)
	}
	as, ok := k.signer.(ssh.AlgorithmSigner)
	if !ok {
		return nil, fmt.Errorf("agentsrv: key %s does not support signature flags", k.fp)
	}
	var algo string
	switch flags {
	case agent.SignatureFlagRsaSha256:
		algo = ssh.KeyAlgoRSASHA256
	case agent.SignatureFlagRsaSha512:
		algo = ssh.KeyAlgoRSASHA512
	default:
		return nil, fmt.Errorf("agentsrv: unsupported signature flags %d", flags)
	}
	return as.SignWithAlgorithm(rand.Reader, data, algo)
}

// confirm runs the askpass program to have the user allow one use of k.
func (s *Server) confirm(ctx context.Context, k *softKey) error {
	ctx, cancel := context.WithTimeout(ctx, askPassTimeout)
	defer cancel()
	prompt := fmt.Sprintf("Allow use of key %s?\nKey fingerprint %s.", k.comment, k.fp)
	cmd := exec.CommandContext(ctx, s.askPass, prompt)
	cmd.Env = append(os.Environ(), "SSH_ASKPASS_PROMPT=confirm")
	if err := cmd.Run(); err != nil {
		s.log.Warn("agentsrv: use of key not confirmed", "fingerprint", k.fp, "err", err)
		return fmt.Errorf("agentsrv: use of key %s not confirmed: %w", k.fp, err)
	}
	s.log.Debug("agentsrv: use of key confirmed", "fingerprint", k.fp)
	return nil
}
