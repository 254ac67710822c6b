package main

import (
	"context"
	"errors"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/sealstore"
)

// A PIN given by icn-agent add (on its terminal, or from --pin-file)
// reaches the agent in the unseal@icn-agent request; the server passes it
// here as a slice of its locked request buffer, which it wipes once the
// request is answered. It is used for that unseal only, instead of asking
// through SSH_ASKPASS, and never kept.

var _ agentsrv.PINUnsealer = (*pinUnsealer)(nil)

// UnsealWithPIN implements agentsrv.PINUnsealer. For an identity without
// a PIN the PIN is ignored.
func (u *pinUnsealer) UnsealWithPIN(ctx context.Context, b *sealstore.Blob, pin, dst []byte) error {
	if !b.Policy.PIN {
		return u.Unseal(ctx, b, dst)
	}
	policies := signedPolicies(u.store, b, u.log)
	if err := sealstore.CheckPolicy(ctx, u.tpm, b, policies); err != nil {
		return explainUnseal(ctx, u.tpm, u.store, b, err)
	}
	err := sealstore.UnsealWith(ctx, u.tpm, b, dst, sealstore.UnsealOptions{PIN: pin, Policies: policies})
	if errors.Is(err, sealstore.ErrWrongPIN) {
		u.log.Warn("wrong PIN", "name", b.Name, "fingerprint", ssh.FingerprintSHA256(b.PublicKey), "from", "icn-agent add")
	}
	return explainUnseal(ctx, u.tpm, u.store, b, err)
}

// UnsealWithPIN implements agentsrv.PINUnsealer when the wrapped
// unsealer does.
func (u pokingUnsealer) UnsealWithPIN(ctx context.Context, b *sealstore.Blob, pin, dst []byte) error {
	pu, ok := u.next.(agentsrv.PINUnsealer)
	if !ok {
		return agentsrv.ErrPINUnsupported
	}
	err := pu.UnsealWithPIN(ctx, b, pin, dst)
	if b.Policy.PIN {
		u.after()
	}
	return err
}
