package sealstore

import (
	"crypto/ed25519"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/edlocked"
)

// SeedSize is the size of an Ed25519 seed, the secret a blob seals.
const SeedSize = ed25519.SeedSize

// PublicKey returns the SSH public key of an Ed25519 seed. The values
// derived from the seed on the way (SHA-512 of it: the clamped scalar and
// the nonce prefix) stay on the stack of edlocked's scrubbed frames, never
// on the heap, and are cleared before PublicKey returns.
func PublicKey(seed []byte) (ssh.PublicKey, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("sealstore: seed is %d bytes, want %d", len(seed), SeedSize)
	}
	pk := new([ed25519.PublicKeySize]byte)
	edlocked.Deep(func() { edlocked.PublicKey(pk, seed) })
	pub, err := ssh.NewPublicKey(ed25519.PublicKey(pk[:]))
	if err != nil {
		return nil, fmt.Errorf("sealstore: %w", err)
	}
	return pub, nil
}
