package agentsrv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/edlocked"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
)

// Identity is a sealed identity handed to SetIdentities.
type Identity struct {
	// Blob is the sealed identity. Its Name and PublicKey (ssh-ed25519)
	// are required; Comment is the listed comment (Name when empty). The
	// other fields matter only to the Unsealer.
	Blob *sealstore.Blob
	// Cert, if not nil, is an SSH certificate for Blob's public key. It
	// is listed as a second key of the identity, right after the plain
	// key, and signatures for it are made with the identity's seed.
	Cert *ssh.Certificate
	// Confirm makes every signature ask the user first, through the
	// askpass program (Config.AskPass); without one, it is refused.
	Confirm bool
	// Notify announces every signature to Config.Notify.
	Notify bool
	// Destinations, if set, restrict the identity to these hops, as
	// ssh-add -h restricts a key (see peerdest.go); an unseal request's
	// destinations (icn-agent add -h) do not replace them.
	Destinations []DestinationConstraint
}

// Errors of the sealed-identity path.
var (
	// ErrLocked is returned (wrapped) by operations refused because the
	// agent is locked.
	ErrLocked = errors.New("agentsrv: agent is locked")
	// ErrNotFound is returned (wrapped) for a key or identity the agent
	// does not have, or has hidden after ssh-add -d.
	ErrNotFound = errors.New("agentsrv: no such key")
	// ErrSeedMismatch means the Unsealer returned a seed whose public key
	// is not the one recorded in the blob.
	ErrSeedMismatch = errors.New("agentsrv: sealed seed does not match public key")
	// errDropped means a seed was dropped (lock, DropAll, removal, a
	// changed blob) while it was being unsealed; the result is discarded.
	errDropped = errors.New("agentsrv: identity was dropped while it was being unsealed")
)

// sealed is the state of one sealed identity.
//
// Fields above mu are guarded by Server.mu; pubWire, pub and fp never
// change. Fields below mu are guarded by mu, which is taken after
// Server.mu when both are held. Signing holds mu for reading, so that
// warm signatures of one identity run in parallel while drop, which
// destroys the seed, waits for them.
type sealed struct {
	name    string
	blob    *sealstore.Blob
	comment string
	cert    *ssh.Certificate
	hidden  bool // removed by ssh-add -d until Restore or a new blob
	// confirm and notify are the identity's settings (Identity);
	// addConfirm is set by an unseal request with the confirm flag
	// (icn-agent add -c) and cleared by one without.
	confirm, notify, addConfirm bool
	// dest holds the destination constraints in force: cfgDest
	// (Identity.Destinations) if any, else addDest (the last unseal
	// request's); nil for none.
	dest, cfgDest, addDest []destConstraint

	pubWire  []byte
	certWire []byte
	pub      [ed25519.PublicKeySize]byte
	fp       string

	mu      sync.RWMutex
	key     *secmem.Buffer // seed || public key while cached, else nil
	expiry  time.Time      // wall clock, zero for none
	timer   *time.Timer
	gen     uint64  // bumped by every drop; starts at 1
	flight  *flight // the unseal in progress, if any
	retired bool    // replaced or removed by SetIdentities, or Close
	unseals uint64
	lastErr string

	last atomic.Pointer[lastUse] // the last signature, for status
}

// flight is one unseal in progress; concurrent users of the identity wait
// for it instead of starting another.
type flight struct {
	done chan struct{}
	err  error // set before done is closed
}

// sigBox holds a signature and its blob in one allocation.
type sigBox struct {
	sig  ssh.Signature
	blob [ed25519.SignatureSize]byte
}

// trySign signs data if the seed is cached and not past its expiry, or if
// it is the seed installed in generation acceptGen (by the caller's own
// unseal, so that a very short lifetime cannot starve it). It reports
// whether it signed. It does not allocate beyond the signature.
func (e *sealed) trySign(now time.Time, data []byte, acceptGen uint64) (*ssh.Signature, bool) {
	b := new(sigBox)
	if !e.trySignInto(now, data, acceptGen, &b.blob) {
		return nil, false
	}
	b.sig = ssh.Signature{Format: ssh.KeyAlgoED25519, Blob: b.blob[:]}
	return &b.sig, true
}

// trySignInto is trySign, writing the signature to sig. It does not
// allocate.
func (e *sealed) trySignInto(now time.Time, data []byte, acceptGen uint64, sig *[ed25519.SignatureSize]byte) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.key == nil {
		return false
	}
	if !e.expiry.IsZero() && !now.Before(e.expiry) && e.gen != acceptGen {
		return false
	}
	edlocked.Sign(sig, e.key.Bytes(), data)
	return true
}

// dropLocked zeroizes the cached seed, if any, and starts a new
// generation. e.mu must be held.
func (e *sealed) dropLocked() bool {
	had := e.key != nil
	if e.key != nil {
		e.key.Destroy()
		e.key = nil
	}
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.expiry = time.Time{}
	e.gen++
	return had
}

func (e *sealed) drop() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dropLocked()
}

// dropIfExpired drops the seed if its expiry is at or before now.
func (e *sealed) dropIfExpired(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.key != nil && !e.expiry.IsZero() && !now.Before(e.expiry) {
		e.dropLocked()
	}
}

// retire drops the seed for good: e is no longer one of the server's
// identities.
func (e *sealed) retire() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.retired = true
	e.dropLocked()
}

// setExpiryLocked makes the cached seed expire life from now (never for
// zero), replacing any previous deadline. e.mu must be held and e.key set.
func (s *Server) setExpiryLocked(e *sealed, now time.Time, life time.Duration) {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.expiry = time.Time{}
	if life <= 0 {
		return
	}
	e.expiry = now.Add(life)
	gen := e.gen
	// The timer runs on the monotonic clock and drops the seed whatever
	// the wall clock says: a clock set back must not extend a seed's life.
	e.timer = time.AfterFunc(life, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.gen == gen && e.key != nil {
			e.dropLocked()
			s.log.Debug("agentsrv: cached seed expired", "name", e.name, "fingerprint", e.fp)
		}
	})
}

// unseal makes sure e's seed is cached, unsealing it if needed, and
// returns the generation it is cached in. life is the lifetime given to a
// seed this call unseals. With refresh, a seed already cached gets its
// expiry reset to life from now (the unseal extension); without, it keeps
// its deadline (a signature).
//
// At most one Unseal per identity runs at a time: later callers wait for
// it and share its outcome. Failures are not cached; the next call tries
// the TPM again.
//
// pin, if not nil, is a PIN the client gave (icn-agent add): an unseal
// this call starts hands it to the Unsealer (see PINUnsealer). It is a
// slice of the connection's request buffer, wiped once the request is
// answered, so the call then waits for that unseal to end even if ctx
// ends first: the unseal must be done with the PIN before it is wiped.
func (s *Server) unseal(ctx context.Context, e *sealed, life time.Duration, refresh bool, pin []byte) (uint64, error) {
	for {
		s.mu.RLock()
		if s.locked {
			s.mu.RUnlock()
			return 0, ErrLocked
		}
		if s.closed {
			s.mu.RUnlock()
			return 0, errClosed
		}
		e.mu.Lock()
		if e.retired {
			e.mu.Unlock()
			s.mu.RUnlock()
			return 0, fmt.Errorf("%w: identity %q was removed", ErrNotFound, e.name)
		}
		now := s.wallNow()
		if e.key != nil && !e.expiry.IsZero() && !now.Before(e.expiry) {
			e.dropLocked()
		}
		if e.key != nil {
			if refresh {
				s.setExpiryLocked(e, now, life)
			}
			gen := e.gen
			e.mu.Unlock()
			s.mu.RUnlock()
			return gen, nil
		}
		f := e.flight
		ours := false
		if f == nil {
			// Start the unseal while Server.mu is held for reading, so
			// that a Lock cannot slip in between the locked check above
			// and the generation recorded here.
			f = &flight{done: make(chan struct{})}
			e.flight = f
			s.wg.Add(1)
			blob, gen := e.blob, e.gen
			ours = pin != nil
			go edlocked.Deep(func() { s.runUnseal(e, f, blob, gen, life, pin) })
		}
		e.mu.Unlock()
		s.mu.RUnlock()

		if ours {
			<-f.done // it reads pin: see above
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if f.err != nil {
			return 0, f.err
		}
		// Loop: pick up the seed (or find it dropped already).
	}
}

// runUnseal performs one unseal for the flight f started in generation gen
// and installs the seed unless e was dropped meanwhile. It runs in its own
// goroutine under the server's context, so that a client hanging up does
// not abort a TPM operation other clients wait for.
func (s *Server) runUnseal(e *sealed, f *flight, blob *sealstore.Blob, gen uint64, life time.Duration, pin []byte) {
	defer s.wg.Done()
	start := time.Now()
	buf, err := s.unsealSeed(s.base, blob, &e.pub, pin)
	s.metrics.Unsealed(err, time.Since(start))

	e.mu.Lock()
	e.flight = nil
	repeated := err != nil && e.lastErr == err.Error()
	if err == nil && (e.gen != gen || e.retired) {
		buf.Destroy()
		err = errDropped
	}
	switch {
	case err == nil:
		e.key = buf
		e.unseals++
		e.lastErr = ""
		s.setExpiryLocked(e, s.wallNow(), life)
	case errors.Is(err, errDropped):
	default:
		e.lastErr = err.Error()
	}
	f.err = err
	close(f.done)
	count := e.unseals
	e.mu.Unlock()

	switch {
	case repeated:
		// The same failure as last time (a PCR mismatch fails every sign
		// until resealed): warned about already.
		s.log.Debug("agentsrv: unseal failed again", "name", e.name, "fingerprint", e.fp, "err", err)
		return
	case err != nil:
		s.log.Warn("agentsrv: unseal failed", "name", e.name, "fingerprint", e.fp, "err", err)
		return
	}
	s.log.Info("agentsrv: unsealed identity", "name", e.name, "fingerprint", e.fp,
		"unseals", count, "duration", time.Since(start).Round(time.Microsecond), "lifetime", life)
}

// unsealSeed asks the Unsealer for blob's seed, in a fresh locked buffer
// laid out as an ed25519.PrivateKey, and checks that the seed's public key
// is pub.
func (s *Server) unsealSeed(ctx context.Context, blob *sealstore.Blob, pub *[ed25519.PublicKeySize]byte, pin []byte) (*secmem.Buffer, error) {
	if s.unsealer == nil {
		return nil, fmt.Errorf("agentsrv: unseal %s: no unsealer configured", blob.Name)
	}
	pu, canPIN := s.unsealer.(PINUnsealer)
	if pin != nil && !canPIN {
		return nil, fmt.Errorf("agentsrv: unseal %s: %w", blob.Name, ErrPINUnsupported)
	}
	buf, err := secmem.New(ed25519.PrivateKeySize)
	if err != nil {
		return nil, fmt.Errorf("agentsrv: unseal %s: %w", blob.Name, err)
	}
	key := buf.Bytes()
	// The unsealer's call tree may leave copies of the seed in its stack
	// frames (go-tpm unmarshals the response through reflection): wipe
	// them, growing the stack first so that it is not copied midway.
	edlocked.Scrub()
	if pin != nil {
		err = pu.UnsealWithPIN(ctx, blob, pin, key[:ed25519.SeedSize])
	} else {
		err = s.unsealer.Unseal(ctx, blob, key[:ed25519.SeedSize])
	}
	edlocked.Scrub()
	if err != nil {
		buf.Destroy()
		return nil, fmt.Errorf("unseal: %w", err)
	}
	var got [ed25519.PublicKeySize]byte
	edlocked.PublicKey(&got, key[:ed25519.SeedSize])
	if subtle.ConstantTimeCompare(got[:], pub[:]) != 1 {
		buf.Destroy()
		return nil, fmt.Errorf("%w (identity %s)", ErrSeedMismatch, blob.Name)
	}
	copy(key[ed25519.SeedSize:], pub[:])
	return buf, nil
}

// SetIdentities replaces the set of sealed identities with ids: the
// result of a directory scan, or of a watcher's batch of events, always
// the complete set.
//
//   - An identity whose name is new is added, not yet unsealed.
//   - An identity whose sealed material is unchanged (same public key,
//     TPM public and private areas, SRK name and policy digest) keeps its
//     cached seed, its counters and its hidden state; its comment and
//     certificate are updated.
//   - An identity whose sealed material changed is replaced: its cached
//     seed is zeroized and, if ssh-add -d had hidden it, it is listed
//     again.
//   - An identity missing from ids is removed and its seed zeroized.
//
// Invalid entries (no blob, no name, a key that is not ssh-ed25519, a
// name or key already given by an earlier entry, a certificate for
// another key) are skipped and reported in the returned error; the valid
// ones are installed regardless. A software key (ssh-add) with the same
// public key as a sealed identity is deleted.
func (s *Server) SetIdentities(ids []Identity) error {
	var errs []error
	type candidate struct {
		id       Identity
		pubWire  []byte
		certWire []byte
		dest     []destConstraint
	}
	var cands []candidate
	names := map[string]bool{}
	keys := map[string]string{}
	for i, id := range ids {
		c, err := checkIdentity(id)
		if err == nil && names[id.Blob.Name] {
			err = fmt.Errorf("duplicate name")
		}
		if err == nil {
			if other, dup := keys[string(c.pubWire)]; dup {
				err = fmt.Errorf("same public key as identity %q", other)
			}
		}
		if err != nil {
			name := ""
			if id.Blob != nil {
				name = id.Blob.Name
			}
			errs = append(errs, fmt.Errorf("agentsrv: identity %d (%q) skipped: %w", i, name, err))
			continue
		}
		names[id.Blob.Name] = true
		keys[string(c.pubWire)] = id.Blob.Name
		cands = append(cands, candidate{id: id, pubWire: c.pubWire, certWire: c.certWire, dest: c.dest})
	}
	slices.SortFunc(cands, func(a, b candidate) int { return strings.Compare(a.id.Blob.Name, b.id.Blob.Name) })

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	next := make([]*sealed, 0, len(cands))
	kept := map[*sealed]bool{}
	var added, replaced int
	for _, c := range cands {
		b := c.id.Blob
		old := s.byName[b.Name]
		if old != nil && sameSealedMaterial(old.blob, b) {
			old.blob = b
			old.comment = listComment(b)
			old.cert = c.id.Cert
			old.certWire = c.certWire
			old.confirm, old.notify = c.id.Confirm, c.id.Notify
			old.cfgDest = c.dest
			old.setDest()
			kept[old] = true
			next = append(next, old)
			continue
		}
		if old != nil {
			replaced++
		} else {
			added++
		}
		e := &sealed{
			name:     b.Name,
			blob:     b,
			comment:  listComment(b),
			cert:     c.id.Cert,
			pubWire:  c.pubWire,
			certWire: c.certWire,
			fp:       ssh.FingerprintSHA256(b.PublicKey),
			gen:      1,
			confirm:  c.id.Confirm,
			notify:   c.id.Notify,
			cfgDest:  c.dest,
		}
		e.setDest()
		copy(e.pub[:], b.PublicKey.(ssh.CryptoPublicKey).CryptoPublicKey().(ed25519.PublicKey))
		next = append(next, e)
	}
	removed := 0
	for _, e := range s.sealed {
		if !kept[e] {
			e.retire()
			if _, still := names[e.name]; !still {
				removed++
			}
		}
	}
	s.sealed = next
	clear(s.byName)
	for _, e := range next {
		s.byName[e.name] = e
	}
	// A software key equal to a sealed identity gives way to it.
	s.soft = slices.DeleteFunc(s.soft, func(k *softKey) bool {
		if _, clash := keys[string(k.baseWire)]; clash {
			k.destroy()
			s.log.Warn("agentsrv: software key replaced by sealed identity", "fingerprint", k.fp, "name", keys[string(k.baseWire)])
			return true
		}
		return false
	})
	s.rebuildKeysLocked()
	s.log.Info("agentsrv: identities updated", "count", len(next), "added", added, "replaced", replaced, "removed", removed, "skipped", len(errs))
	for _, err := range errs {
		s.log.Warn("agentsrv: invalid identity", "err", err)
	}
	return errors.Join(errs...)
}

type checkedIdentity struct {
	pubWire  []byte
	certWire []byte
	dest     []destConstraint
}

// checkIdentity checks an Identity's fields that the server relies on.
func checkIdentity(id Identity) (checkedIdentity, error) {
	var c checkedIdentity
	b := id.Blob
	switch {
	case b == nil:
		return c, errors.New("no blob")
	case b.Name == "":
		return c, errors.New("empty name")
	case b.PublicKey == nil:
		return c, errors.New("no public key")
	case b.PublicKey.Type() != ssh.KeyAlgoED25519:
		return c, fmt.Errorf("public key type %q, want %q", b.PublicKey.Type(), ssh.KeyAlgoED25519)
	}
	cpk, ok := b.PublicKey.(ssh.CryptoPublicKey)
	if !ok {
		return c, errors.New("public key has no crypto key")
	}
	if pk, ok := cpk.CryptoPublicKey().(ed25519.PublicKey); !ok || len(pk) != ed25519.PublicKeySize {
		return c, errors.New("malformed ed25519 public key")
	}
	c.pubWire = b.PublicKey.Marshal()
	if id.Cert != nil {
		if id.Cert.Key == nil || !bytes.Equal(id.Cert.Key.Marshal(), c.pubWire) {
			return c, errors.New("certificate is for another key")
		}
		c.certWire = id.Cert.Marshal()
	}
	dest, err := destConstraints(id.Destinations)
	if err != nil {
		return c, err
	}
	c.dest = dest
	return c, nil
}

// setDest recomputes dest. Server.mu must be held for writing.
func (e *sealed) setDest() {
	e.dest = e.cfgDest
	if e.dest == nil {
		e.dest = e.addDest
	}
}

// sameSealedMaterial reports whether two blobs seal the same seed the
// same way, so that a seed unsealed from a stays valid for b.
func sameSealedMaterial(a, b *sealstore.Blob) bool {
	return bytes.Equal(a.PublicKey.Marshal(), b.PublicKey.Marshal()) &&
		bytes.Equal(a.Public, b.Public) &&
		bytes.Equal(a.Private, b.Private) &&
		bytes.Equal(a.SRKName, b.SRKName) &&
		bytes.Equal(a.Policy.Digest, b.Policy.Digest)
}

// listComment is the comment an identity is listed with.
func listComment(b *sealstore.Blob) string {
	if b.Comment != "" {
		return b.Comment
	}
	return b.Name
}

// rebuildKeysLocked recomputes byKey from the identities and software
// keys. s.mu must be held for writing.
func (s *Server) rebuildKeysLocked() {
	clear(s.byKey)
	for _, k := range s.soft {
		s.byKey[string(k.wire)] = keyRef{soft: k}
	}
	for _, e := range s.sealed {
		s.byKey[string(e.pubWire)] = keyRef{sealed: e}
		if e.certWire != nil {
			s.byKey[string(e.certWire)] = keyRef{sealed: e}
		}
	}
}

// Restore lists again the identity name hidden by ssh-add -d (a removal
// request from a client). Restoring an identity that is not hidden does
// nothing; an unknown name is an error wrapping ErrNotFound.
func (s *Server) Restore(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byName[name]
	if e == nil {
		return fmt.Errorf("%w: no identity named %q", ErrNotFound, name)
	}
	if e.hidden {
		e.hidden = false
		s.log.Info("agentsrv: identity restored", "name", name, "fingerprint", e.fp)
	}
	return nil
}
