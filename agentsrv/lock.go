package agentsrv

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/blake2b"

	"github.com/icn/icn-agent/internal/edlocked"
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

// The passphrase is not handed to Argon2 as it is. argon2.IDKey starts
// with H0 = BLAKE2b(LE32 p, T, m, t, v, y (24 bytes) || LE32 len(P) || P
// || LE32 len(S) || S || ...) (RFC 9106 section 3.2), and x/crypto's
// BLAKE2b (digest.Write) copies into its block buffer, a heap object
// nobody wipes, every byte that does not complete a 128-byte block, while
// it compresses whole blocks straight from the caller's slice. So P is
// laid out in locked memory as
//
//	passHead fixed bytes     completing H0's first block after the
//	                         28 bytes of parameters and length
//	k*128 bytes              uint32 length || passphrase || zeros, a whole
//	                         number of blocks, compressed in place
//	passTail fixed bytes     what the block buffer keeps of P
//
// and the passphrase never enters the buffer. TestLockInputLayout pins
// this against x/crypto's code. What remains, and cannot be wiped, is
// derived: BLAKE2b's chaining state and Argon2's work area (see
// docs/security.md).
const (
	h0Prefix = 24 + 4                       // bytes of H0's input before P
	passHead = blake2b.BlockSize - h0Prefix // 100
	passTail = 1
)

// lockDomain opens the fixed head of P, so that a lock hash is of no use
// for anything else.
const lockDomain = "icn-agent lock passphrase v2"

// passInput lays pass out in a fresh locked buffer as Argon2's input P;
// see passHead.
func passInput(pass []byte) (*secmem.Buffer, error) {
	region := (4 + len(pass) + blake2b.BlockSize - 1) / blake2b.BlockSize * blake2b.BlockSize
	buf, err := secmem.New(passHead + region + passTail)
	if err != nil {
		return nil, fmt.Errorf("agentsrv: lock: %w", err)
	}
	p := buf.Bytes()
	copy(p, lockDomain)
	binary.BigEndian.PutUint32(p[passHead:], uint32(len(pass)))
	copy(p[passHead+4:], pass)
	p[len(p)-1] = 0x01
	return buf, nil
}

// hashPassphrase returns the Argon2id hash of pass with salt, in locked
// memory. It scrubs the stack below its caller afterwards: the caller
// runs inside edlocked.Deep (a connection goroutine), so the frames of
// BLAKE2b that held passphrase blocks are not left behind.
func hashPassphrase(pass, salt []byte) (*secmem.Buffer, error) {
	p, err := passInput(pass)
	if err != nil {
		return nil, err
	}
	defer p.Destroy()
	out, err := secmem.New(lockKeyLen)
	if err != nil {
		return nil, fmt.Errorf("agentsrv: lock: %w", err)
	}
	edlocked.Scrub() // grow the stack now, not with the passphrase on it
	h := argon2.IDKey(p.Bytes(), salt, lockTime, lockMemory, lockThreads, lockKeyLen)
	copy(out.Bytes(), h)
	secmem.Wipe(h)
	edlocked.Scrub()
	return out, nil
}

// lock locks the agent with passphrase: from then on List is empty and
// signing, adding and removing fail until unlock. Every cached seed is
// zeroized. The passphrase is kept only as a salted Argon2id hash, in
// locked memory; passphrase itself (a slice of the request buffer) is
// wiped.
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
	hash, err := hashPassphrase(passphrase, salt)
	if err != nil {
		return err
	}

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
// and Unlock requests from other connections wait meanwhile. The guess
// and its hash are wiped either way, and the lock hash on success.
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
	got, err := hashPassphrase(passphrase, salt)
	if err != nil {
		return err
	}
	// hash stays valid: only unlock, under lockMu, destroys it.
	match := subtle.ConstantTimeCompare(got.Bytes(), hash.Bytes()) == 1
	got.Destroy()
	if !match {
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
	s.lockHash.Destroy()
	s.lockHash, s.lockSalt = nil, nil
	s.mu.Unlock()
	s.log.Info("agentsrv: agent unlocked")
	return nil
}
