package agentsrv

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/icn/icn-agent/internal/secmem"
)

// Argon2id parameters for the lock passphrase: OWASP's baseline for
// Argon2id (2 passes over 19 MiB). A hash takes 30-40 ms on a 2-core
// server, enough to make each guess expensive without making ssh-add -x
// sluggish.
const (
	lockTime    = 2
	lockMemory  = 19 * 1024 // KiB
	lockThreads = 1
	lockKeyLen  = 32
	lockSaltLen = 16
)

// Failed unlocks are slowed down as in OpenSSH: 100 ms times the number
// of consecutive failures, here capped at 10 s.
const (
	unlockDelayStep = 100 * time.Millisecond
	unlockDelayMax  = 10 * time.Second
)

var (
	errEmptyPassphrase = errors.New("agentsrv: refusing an empty lock passphrase")
	errAlreadyLocked   = errors.New("agentsrv: agent is already locked")
	errNotLocked       = errors.New("agentsrv: agent is not locked")
	errBadPassphrase   = errors.New("agentsrv: incorrect passphrase")
)

func hashPassphrase(pass, salt []byte) []byte {
	return argon2.IDKey(pass, salt, lockTime, lockMemory, lockThreads, lockKeyLen)
}

// lock locks the agent with passphrase: from then on List is empty and
// signing, adding and removing fail until unlock. Every cached seed is
// zeroized. The passphrase is kept only as a salted Argon2id hash.
func (s *Server) lock(passphrase []byte) error {
	defer secmem.Wipe(passphrase)
	if len(passphrase) == 0 {
		return errEmptyPassphrase
	}
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	s.mu.RLock()
	locked := s.locked
	s.mu.RUnlock()
	if locked {
		return errAlreadyLocked
	}
	salt := make([]byte, lockSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	hash := hashPassphrase(passphrase, salt)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.locked = true
	s.lockHash, s.lockSalt = hash, salt
	dropped := 0
	for _, e := range s.sealed {
		if e.drop() {
			dropped++
		}
	}
	s.log.Info("agentsrv: agent locked", "seeds_dropped", dropped)
	return nil
}

// unlock unlocks the agent if passphrase matches the one it was locked
// with. After a wrong passphrase it waits 100 ms times the number of
// consecutive failures (at most 10 s) before returning the error; Lock
// and Unlock requests from other connections wait meanwhile.
func (s *Server) unlock(ctx context.Context, passphrase []byte) error {
	defer secmem.Wipe(passphrase)
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	s.mu.RLock()
	locked, hash, salt := s.locked, s.lockHash, s.lockSalt
	s.mu.RUnlock()
	if !locked {
		return errNotLocked
	}
	got := hashPassphrase(passphrase, salt)
	defer secmem.Wipe(got)
	if subtle.ConstantTimeCompare(got, hash) != 1 {
		if s.failures < 1000 {
			s.failures++
		}
		delay := min(time.Duration(s.failures)*unlockDelayStep, unlockDelayMax)
		s.log.Warn("agentsrv: unlock with a wrong passphrase", "failures", s.failures, "delay", delay)
		s.sleep(ctx, delay)
		return errBadPassphrase
	}
	s.failures = 0
	s.mu.Lock()
	s.locked = false
	secmem.Wipe(s.lockHash)
	s.lockHash, s.lockSalt = nil, nil
	s.mu.Unlock()
	s.log.Info("agentsrv: agent unlocked")
	return nil
}
