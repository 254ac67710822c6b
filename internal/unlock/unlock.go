// Package unlock unseals identities for the agent, with what each one
// needs besides the TPM: the signed policies that approve the current PCR
// values (for identities sealed to a policy key), and a PIN (for
// PIN-protected ones).
//
// A PIN-protected identity is sealed with a policy that ends in
// TPM2_PolicyAuthValue, without noDA: the TPM counts wrong PINs and locks
// out after a few (docs/pcr-policies.md). The agent asks for the PIN by
// running the SSH_ASKPASS program (internal/prompt), or takes the one
// icn-agent add sent in its unseal request. Nobody keeps a PIN: the agent
// asks each time it must unseal, and a wrong PIN is reported, never
// retried. Before asking, the policy is checked without the PIN
// (tpmseal.CheckPolicy): if the PCRs moved, or no signed policy approves
// them, asking could not help and is not done.
//
// Because wrong PINs move the TPM's dictionary-attack counter, status
// reports it; DACache keeps it so that a status request never waits for
// the TPM.
package unlock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/prompt"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// ErrNoAskpass means an identity needs a PIN and the agent has no
// SSH_ASKPASS program to ask for it (and the request brought none).
var ErrNoAskpass = errors.New("unlock: no program to ask for the PIN")

var (
	_ agentsrv.Unsealer    = (*Unsealer)(nil)
	_ agentsrv.PINUnsealer = (*Unsealer)(nil)
)

// Unsealer is the agent's agentsrv.Unsealer and agentsrv.PINUnsealer.
type Unsealer struct {
	// TPM is the agent's TPM, each use bounded by the agent's TPM
	// timeout.
	TPM tpmseal.TPM
	// Store holds the signed policies.
	Store *sealstore.Store
	// Askpass is the SSH_ASKPASS program; if empty, PIN-protected
	// identities unseal only with a PIN sent by icn-agent add.
	Askpass string
	// Log receives a warning for each wrong PIN; nil discards.
	Log *slog.Logger
	// Advise, if set, adds to an unseal error what the user can do
	// about it. Errors keep their sentinels.
	Advise func(b *sealstore.Blob, err error) error
	// AfterPIN, if set, is called after each unseal of a PIN-protected
	// identity, failed or not (a wrong PIN moves the TPM's
	// dictionary-attack counter).
	AfterPIN func()
}

// Unseal unseals b into dst, asking for its PIN through Askpass if it
// has one.
func (u *Unsealer) Unseal(ctx context.Context, b *sealstore.Blob, dst []byte) error {
	return u.unseal(ctx, b, nil, dst)
}

// UnsealWithPIN unseals b into dst with pin, a slice of the agent's
// locked request buffer that the caller wipes. For an identity without a
// PIN the PIN is ignored.
func (u *Unsealer) UnsealWithPIN(ctx context.Context, b *sealstore.Blob, pin, dst []byte) error {
	if pin == nil {
		pin = []byte{}
	}
	return u.unseal(ctx, b, pin, dst)
}

// unseal unseals b; a nil pin means ask for it.
func (u *Unsealer) unseal(ctx context.Context, b *sealstore.Blob, pin, dst []byte) error {
	policies := SignedPolicies(u.Store, b, u.log())
	if !b.Policy.PIN {
		err := tpmseal.UnsealWith(ctx, u.TPM, b, dst, tpmseal.UnsealOptions{Policies: policies})
		return u.explain(ctx, b, err)
	}
	if u.AfterPIN != nil {
		defer u.AfterPIN()
	}
	if err := tpmseal.CheckPolicy(ctx, u.TPM, b, policies); err != nil {
		return u.explain(ctx, b, err)
	}
	from := "icn-agent add"
	if pin == nil {
		if u.Askpass == "" {
			return u.explain(ctx, b, fmt.Errorf("%s is protected by a PIN: %w", b.Name, ErrNoAskpass))
		}
		asked, err := prompt.Askpass(ctx, u.Askpass, Prompt(b))
		if err != nil {
			return fmt.Errorf("%s: %w", b.Name, err)
		}
		defer secmem.Wipe(asked)
		pin, from = asked, "SSH_ASKPASS"
	}
	err := tpmseal.UnsealWith(ctx, u.TPM, b, dst, tpmseal.UnsealOptions{PIN: pin, Policies: policies})
	if errors.Is(err, tpmseal.ErrWrongPIN) {
		u.log().Warn("wrong PIN", "name", b.Name, "fingerprint", ssh.FingerprintSHA256(b.PublicKey), "from", from)
	}
	return u.explain(ctx, b, err)
}

func (u *Unsealer) explain(ctx context.Context, b *sealstore.Blob, err error) error {
	err = Explain(ctx, u.TPM, err)
	if err != nil && u.Advise != nil {
		err = u.Advise(b, err)
	}
	return err
}

func (u *Unsealer) log() *slog.Logger {
	if u.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return u.Log
}

// Prompt is the prompt for an identity's PIN.
func Prompt(b *sealstore.Blob) string {
	return fmt.Sprintf("Enter PIN for icn-agent identity %s (%s): ", b.Name, ssh.FingerprintSHA256(b.PublicKey))
}

// SignedPolicies returns the store's valid signed policies if b is sealed
// to signed policies, else nil. Files that are not valid policies are
// logged and skipped.
func SignedPolicies(store *sealstore.Store, b *sealstore.Blob, log *slog.Logger) []*sealstore.SignedPolicy {
	if b.Policy.Kind != sealstore.PolicyAuthorizedPCR || store == nil {
		return nil
	}
	entries, err := store.SignedPolicies()
	if err != nil {
		log.Warn("cannot read the signed policies", "err", err)
		return nil
	}
	var out []*sealstore.SignedPolicy
	for _, e := range entries {
		if e.Err != nil {
			log.Warn("ignoring a file that is not a valid signed policy", "path", e.Path, "err", e.Err)
			continue
		}
		out = append(out, e.Policy)
	}
	return out
}

// Explain adds the TPM's dictionary-attack state to a wrong-PIN or
// lockout error: how many failures it counted, when it locks out, how
// fast it forgets. Other errors, and errors when the state cannot be
// read, are returned as they are.
func Explain(ctx context.Context, tpm tpmseal.TPM, err error) error {
	switch {
	case errors.Is(err, tpmseal.ErrWrongPIN):
		if st, derr := ReadDA(ctx, tpm); derr == nil {
			return fmt.Errorf("%w; the TPM has counted %d failed PIN attempt(s) and locks every PIN-protected identity out at %d", err, st.Counter, st.MaxTries)
		}
	case errors.Is(err, tpmseal.ErrLockout):
		if st, derr := ReadDA(ctx, tpm); derr == nil {
			return fmt.Errorf("%w; it forgets one failed attempt every %s (%d counted, lockout at %d)", err, time.Duration(st.RecoveryTime)*time.Second, st.Counter, st.MaxTries)
		}
	}
	return err
}

// ReadDA reads the TPM's dictionary-attack state.
func ReadDA(ctx context.Context, t tpmseal.TPM) (tpmdev.DAState, error) {
	var st tpmdev.DAState
	err := t.RunWithSRK(ctx, func(tpm transport.TPM, _ *tpmdev.SRK) error {
		var err error
		st, err = tpmdev.ReadDA(tpm)
		return err
	})
	return st, err
}
