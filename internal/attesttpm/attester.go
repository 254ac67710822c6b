package attesttpm

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/sealstore"
)

// AKPath is where the attestation key file of the store in storeDir
// lives: beside the identities directory, so that a store of one's own
// (--store) keeps its own key.
func AKPath(storeDir string) string {
	return filepath.Join(filepath.Dir(storeDir), "attestation-key.pem")
}

// Attester is the daemon's side of the attestation extensions: it answers
// quote requests (agentsrv.Attester), EK and credential-activation
// requests (attest.EKExtension, attest.ActivateExtension) and stamps the
// audit log's checkpoints (audit.Stamper), all with one attestation key,
// loaded or created on first use from its file.
//
// Each answer keeps the AK loaded in the TPM only while it works: quotes
// and stamps are rare, and a swtpm has no resource manager and only three
// object slots, so commands run beside the agent keep their room. The
// TPM is the daemon's: each use of it is bounded there.
type Attester struct {
	tpm   TPM
	path  string
	store *sealstore.Store
	log   *slog.Logger

	mu sync.Mutex // guards ak
	ak *AK
}

// NewAttester returns an Attester using tpm and the AK file at path
// (usually AKPath of the store's directory). The store's signed policies,
// if store is not nil, go into evidence about identities bound to them.
// log (nil: slog.Default) receives what fails on the side.
func NewAttester(tpm TPM, path string, store *sealstore.Store, log *slog.Logger) *Attester {
	if log == nil {
		log = slog.Default()
	}
	return &Attester{tpm: tpm, path: path, store: store, log: log}
}

// loadAK returns the attestation key, created on first use.
func (a *Attester) loadAK(ctx context.Context) (*AK, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ak == nil {
		ak, err := LoadOrCreateAK(ctx, a.tpm, a.path)
		if err != nil {
			return nil, err
		}
		a.ak = ak
	}
	return a.ak, nil
}

// withAK runs fn with the attestation key loaded, and unloads it after.
func (a *Attester) withAK(ctx context.Context, fn func(ak *AK) error) error {
	ak, err := a.loadAK(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := ak.Unload(context.WithoutCancel(ctx), a.tpm); err != nil {
			a.log.Warn("cannot unload the attestation key", "err", err)
		}
	}()
	return fn(ak)
}

// Quote answers the quote extension about the sealed identity b (see
// AK.Quote); sign signs with its seed.
func (a *Attester) Quote(ctx context.Context, b *sealstore.Blob, nonce []byte, extra []int, sign func([]byte) ([]byte, error)) (*attest.Evidence, error) {
	var entries []sealstore.PolicyEntry
	if a.store != nil && b.Policy.Kind == sealstore.PolicyAuthorizedPCR {
		var err error
		if entries, err = a.store.SignedPolicies(); err != nil {
			a.log.Warn("cannot read the signed policies for evidence", "err", err)
		}
	}
	var ev *attest.Evidence
	err := a.withAK(ctx, func(ak *AK) error {
		var err error
		ev, err = ak.Quote(ctx, a.tpm, Subject{
			PublicKey:     b.PublicKey,
			SealedPublic:  b.Public,
			SealedPrivate: b.Private,
			PCRs:          b.Policy.Indexes(),
			Policy:        subjectPolicy(b, entries),
		}, QuoteRequest{Nonce: nonce, ExtraPCRs: extra, Sign: sign})
		return err
	})
	return ev, err
}

// EKInfo answers attest.EKExtension (see AK.EKInfo).
func (a *Attester) EKInfo(ctx context.Context) (*attest.EKInfo, error) {
	ak, err := a.loadAK(ctx)
	if err != nil {
		return nil, err
	}
	return ak.EKInfo(ctx, a.tpm)
}

// Activate answers attest.ActivateExtension (see AK.Activate).
func (a *Attester) Activate(ctx context.Context, blob, secret []byte) ([]byte, error) {
	var out []byte
	err := a.withAK(ctx, func(ak *AK) error {
		var err error
		out, err = ak.Activate(ctx, a.tpm, blob, secret)
		return err
	})
	return out, err
}

// Stamp signs digest with the attestation key (see AK.Stamp); it is the
// audit log's audit.Stamper.
func (a *Attester) Stamp(ctx context.Context, digest []byte) (*attest.Stamp, error) {
	var s *attest.Stamp
	err := a.withAK(ctx, func(ak *AK) error {
		var err error
		s, err = ak.Stamp(ctx, a.tpm, digest)
		return err
	})
	return s, err
}

// subjectPolicy describes b's policy for attestation evidence: its kind,
// whether it has a PIN, and for a signed PCR policy the key and the
// approvals among entries (the store's signed policies) made by that key,
// so that the evidence can carry the one for the quoted values.
func subjectPolicy(b *sealstore.Blob, entries []sealstore.PolicyEntry) SubjectPolicy {
	sp := SubjectPolicy{PIN: b.Policy.PIN}
	switch b.Policy.Kind {
	case sealstore.PolicyPCR:
		sp.Kind = attest.PolicyPCR
	case sealstore.PolicyAuthorizedPCR:
		sp.Kind = attest.PolicyAuthorizedPCR
		sp.Signer = b.Policy.Signer
		key, err := b.Policy.SignerKey()
		if err != nil {
			return sp // the evidence then shows no approval
		}
		for _, pe := range entries {
			p := pe.Policy
			if pe.Err != nil || p == nil || p.Key == nil || !bytes.Equal(p.Key.Name, key.Name) {
				continue
			}
			sp.Approvals = append(sp.Approvals, Approval{
				Digest: p.Digest,
				Signature: tpm2.Marshal(tpm2.TPMTSignature{
					SigAlg: tpm2.TPMAlgECDSA,
					Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
						Hash:       tpm2.TPMAlgSHA256,
						SignatureR: tpm2.TPM2BECCParameter{Buffer: p.R},
						SignatureS: tpm2.TPM2BECCParameter{Buffer: p.S},
					}),
				}),
			})
		}
	}
	return sp
}
