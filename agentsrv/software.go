package agentsrv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// softKey is a key added with ssh-add. An Ed25519 key lives in locked
// memory (see edSigner); RSA and ECDSA keys live in the Go heap, as
// x/crypto's signers need them, and their big.Int words are wiped when the
// key goes (see wipeKey for what cannot be). All fields are guarded by
// Server.mu.
type softKey struct {
	signer   ssh.Signer
	typ      string // the listed key's type
	wire     []byte // the listed key: the certificate if there is one
	baseWire []byte // the plain public key
	comment  string
	fp       string
	expire   time.Time // wall clock, zero for none
	timer    *time.Timer
	confirm  bool
	dest     []destConstraint // ssh-add -h; never changes
	wipe     func()           // wipes the private key; nil once done
}

func (k *softKey) stopTimer() {
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
}

// destroy stops k's timer and wipes its private key. Signatures in
// progress finish first (edSigner.destroy waits for them).
func (k *softKey) destroy() {
	k.stopTimer()
	if k.wipe != nil {
		k.wipe()
		k.wipe = nil
	}
}

// askPassTimeout bounds how long a confirmation prompt may wait for the
// user.
const askPassTimeout = 2 * time.Minute

// ErrKeyMismatch is returned (wrapped) for an added Ed25519 key whose
// public half is not the one its seed gives.
var ErrKeyMismatch = errors.New("agentsrv: private key does not match its public key")

// addParsed adds the key of a parsed add request. Its byte slices point
// into the connection's request buffer, which is wiped after the reply:
// an Ed25519 seed goes from there straight into locked memory; RSA and
// ECDSA values are copied into big.Ints, which are wiped when the key is
// removed.
func (s *Server) addParsed(a *addRequest) error {
	if a.unsupported != "" {
		return fmt.Errorf("agentsrv: unsupported key constraint %q", a.unsupported)
	}
	if a.confirm && s.askPass == "" {
		return errors.New("agentsrv: the confirm constraint (ssh-add -c) needs an askpass program, and none is configured")
	}
	var cert *ssh.Certificate
	if a.cert != nil {
		// A copy: the parsed certificate aliases its input, which is
		// the connection's request buffer.
		pub, err := ssh.ParsePublicKey(bytes.Clone(a.cert))
		if err != nil {
			return fmt.Errorf("agentsrv: add key: certificate: %w", err)
		}
		var ok bool
		if cert, ok = pub.(*ssh.Certificate); !ok {
			return fmt.Errorf("agentsrv: add key: %s is not a certificate", pub.Type())
		}
	}
	signer, wipe, err := newSoftSigner(a, cert)
	if err != nil {
		return fmt.Errorf("agentsrv: add key: %w", err)
	}
	return s.addSigner(signer, wipe, cert, string(a.comment), a.lifetime, a.confirm, a.dest)
}

// addSoft adds the key of an x/crypto AddedKey, for callers in the
// process. Its private key is in the heap already: a software Ed25519 key
// is still copied into locked memory, like one added over the protocol.
func (s *Server) addSoft(key agent.AddedKey) error {
	var dest []destConstraint
	for _, ce := range key.ConstraintExtensions {
		if ce.ExtensionName != ExtRestrictDestination || dest != nil {
			return fmt.Errorf("agentsrv: unsupported key constraint %q", ce.ExtensionName)
		}
		in := cryptobyte.String(ce.ExtensionDetails)
		var err error
		if dest, err = parseDestConstraints(&in); err != nil {
			return err
		}
		if !in.Empty() {
			return fmt.Errorf("%w: %s: trailing data", errMalformed, ExtRestrictDestination)
		}
	}
	if key.ConfirmBeforeUse && s.askPass == "" {
		return errors.New("agentsrv: the confirm constraint (ssh-add -c) needs an askpass program, and none is configured")
	}
	var priv ed25519.PrivateKey
	switch k := key.PrivateKey.(type) {
	case ed25519.PrivateKey:
		priv = k
	case *ed25519.PrivateKey:
		priv = *k
	}
	var signer ssh.Signer
	var wipe func()
	var err error
	if priv != nil {
		signer, wipe, err = newEdSigner(priv[ed25519.SeedSize:], priv)
	} else {
		signer, err = ssh.NewSignerFromKey(key.PrivateKey)
	}
	if err != nil {
		return fmt.Errorf("agentsrv: add key: %w", err)
	}
	return s.addSigner(signer, wipe, key.Certificate, key.Comment, key.LifetimeSecs, key.ConfirmBeforeUse, dest)
}

// addSigner adds or replaces a software key. On failure it calls wipe.
func (s *Server) addSigner(signer ssh.Signer, wipe func(), cert *ssh.Certificate, comment string, lifetime uint32, confirm bool, dest []destConstraint) (err error) {
	defer func() {
		if err != nil && wipe != nil {
			wipe()
		}
	}()
	baseWire := signer.PublicKey().Marshal()
	if cert != nil {
		if signer, err = ssh.NewCertSigner(cert, signer); err != nil {
			return fmt.Errorf("agentsrv: add key: %w", err)
		}
	}
	k := &softKey{
		signer:   signer,
		typ:      signer.PublicKey().Type(),
		wire:     signer.PublicKey().Marshal(),
		baseWire: baseWire,
		comment:  comment,
		fp:       ssh.FingerprintSHA256(signer.PublicKey()),
		confirm:  confirm,
		dest:     dest,
		wipe:     wipe,
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
	if lifetime > 0 {
		life := time.Duration(lifetime) * time.Second
		k.expire = s.wallNow().Add(life)
		k.timer = time.AfterFunc(life, func() { s.removeSoftKey(k, "lifetime expired") })
	}
	if i := slices.IndexFunc(s.soft, func(o *softKey) bool { return string(o.wire) == string(k.wire) }); i >= 0 {
		s.soft[i].destroy()
		s.soft[i] = k
	} else {
		s.soft = append(s.soft, k)
	}
	s.byKey[string(k.wire)] = keyRef{soft: k}
	s.log.Info("agentsrv: software key added", "fingerprint", k.fp, "type", k.typ,
		"lifetime", time.Duration(lifetime)*time.Second, "confirm", k.confirm, "destination_constraints", len(dest))
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
	k.destroy()
	s.soft = slices.Delete(s.soft, i, i+1)
	if ref := s.byKey[string(k.wire)]; ref.soft == k {
		delete(s.byKey, string(k.wire))
	}
	s.log.Info("agentsrv: software key removed", "fingerprint", k.fp, "reason", why)
}

// expireSoftIfDue removes the software keys whose lifetime has passed,
// taking Server.mu for writing only when there is one: listing, the most
// frequent request, then runs under the read lock alone, in parallel with
// signatures.
func (s *Server) expireSoftIfDue() {
	now := s.wallNow()
	s.mu.RLock()
	due := slices.ContainsFunc(s.soft, func(k *softKey) bool { return !k.expire.IsZero() && !now.Before(k.expire) })
	s.mu.RUnlock()
	if due {
		s.mu.Lock()
		s.expireSoftLocked(now)
		s.mu.Unlock()
	}
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
func (s *Server) signSoft(ctx context.Context, info *connInfo, k *softKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	if k.confirm {
		if err := s.askConfirm(ctx, k.fp, confirmPrompt("key "+k.comment, k.fp, info)); err != nil {
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
