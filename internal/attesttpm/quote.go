package attesttpm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmpolicy"
)

// maxQuoteAttempts bounds how often Quote starts over because a PCR moved
// while it was quoting.
const maxQuoteAttempts = 4

// Subject is the sealed identity a quote is about.
type Subject struct {
	// PublicKey is the identity's public key, of type ssh-ed25519.
	PublicKey ssh.PublicKey
	// SealedPublic is the marshalled TPM2B_PUBLIC of the sealed object.
	SealedPublic []byte
	// SealedPrivate is the marshalled TPM2B_PRIVATE of the sealed object,
	// needed to load it. It stays on this machine: evidence does not
	// carry it.
	SealedPrivate []byte
	// PCRs are the sealing PCRs (SHA-256 bank), the PCRs the sealed
	// object's policy covers.
	PCRs []int
	// Policy describes the sealed object's policy; the zero value is a
	// attest.PolicyPCR policy without PIN.
	Policy SubjectPolicy
}

// SubjectPolicy describes a sealed object's policy for the evidence (see
// attest.Evidence.PolicyKind).
type SubjectPolicy struct {
	// Kind is attest.PolicyPCR (or zero) or attest.PolicyAuthorizedPCR.
	Kind attest.PolicyKind
	// PIN is set when the policy ends in TPM2_PolicyAuthValue.
	PIN bool
	// Signer is the policy key's marshalled TPM2B_PUBLIC
	// (attest.PolicyAuthorizedPCR).
	Signer []byte
	// Approvals are the signed policies the agent holds for this key
	// (attest.PolicyAuthorizedPCR): Quote puts in the evidence the one that
	// approves the quoted values, if any.
	Approvals []Approval
}

// Approval is a attest.PolicyPCR digest approved by a policy key.
type Approval struct {
	// Digest is the approved attest.PolicyPCR digest.
	Digest []byte
	// Signature is the key's signature over SHA256(Digest), a marshalled
	// TPMT_SIGNATURE (ECDSA with SHA-256).
	Signature []byte
}

// QuoteRequest is a verifier's challenge.
type QuoteRequest struct {
	// Nonce is the verifier's fresh random challenge, 8 to 64 bytes.
	Nonce []byte
	// ExtraPCRs are quoted in addition to the sealing PCRs.
	ExtraPCRs []int
	// Sign produces the identity's proof of possession: the raw 64-byte
	// Ed25519 signature over msg, which is attest.PossessionMessage(nonce,
	// quote). The agent passes a func that unseals the identity if needed
	// and fails while the agent is locked. It is called after the TPM
	// work is done and the TPM released, so it may use the TPM itself.
	Sign func(msg []byte) ([]byte, error)
}

// Quote produces evidence about the sealed identity s for the challenge
// req. In one TPM session it
//
//  1. reads the PCRs (the sealing PCRs and req.ExtraPCRs, ascending),
//     quotes them with the attestation key (TPM2_Quote, qualifyingData =
//     attest.Binding(nonce, identity key)) and reads them again, starting over
//     (up to 4 times) if a PCR moved meanwhile;
//  2. loads the sealed object under the SRK and runs TPM2_ReadPublic on it
//     in a fresh audit session, then has the attestation key sign the
//     session's audit digest (TPM2_GetSessionAuditDigest, qualifyingData =
//     attest.Binding(nonce, identity key)). If the TPM refuses because the
//     endorsement hierarchy has a password or is disabled, the evidence
//     goes without certification (see ErrNoCertify). The sealed object
//     and the audit session are flushed on every path;
//
// then, with the TPM released, it calls req.Sign(attest.PossessionMessage(nonce,
// quote)). Before returning, it verifies the evidence as a verifier pinned
// to this AK would, so it never returns evidence that does not verify.
//
// The sealed object is only loaded and read, never unsealed, so Quote
// works whatever the PCRs hold; whether the identity could still be
// unsealed is for the verifier to judge (Result.SealedPolicyMatches).
func (a *AK) Quote(ctx context.Context, t TPM, s Subject, req QuoteRequest) (*attest.Evidence, error) {
	if n := len(req.Nonce); n < attest.MinNonceSize || n > attest.MaxNonceSize {
		return nil, fmt.Errorf("attesttpm: quote: nonce is %d bytes, want %d to %d", n, attest.MinNonceSize, attest.MaxNonceSize)
	}
	if req.Sign == nil {
		return nil, errors.New("attesttpm: quote: no Sign function for the proof of possession")
	}
	if s.PublicKey == nil || s.PublicKey.Type() != ssh.KeyAlgoED25519 {
		return nil, errors.New("attesttpm: quote: subject public key is not ssh-ed25519")
	}
	idKey, err := ed25519Key(s.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("attesttpm: quote: %w", err)
	}
	sealedPCRs, err := pcrSet("sealing PCRs", s.PCRs, false)
	if err != nil {
		return nil, err
	}
	extra, err := pcrSet("extra PCRs", req.ExtraPCRs, true)
	if err != nil {
		return nil, err
	}
	pcrs := slices.Compact(slices.Sorted(slices.Values(slices.Concat(sealedPCRs, extra))))
	inPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](s.SealedPublic)
	if err != nil || len(s.SealedPublic) < 2 {
		return nil, errors.New("attesttpm: quote: subject's sealed public area is not a TPM2B_PUBLIC")
	}
	inPriv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](s.SealedPrivate)
	if err != nil || len(s.SealedPrivate) < 2 {
		return nil, errors.New("attesttpm: quote: subject's sealed private area is not a TPM2B_PRIVATE")
	}
	binding := attest.Binding(req.Nonce, s.PublicKey)
	kind := s.Policy.Kind
	switch kind {
	case attest.PolicyUnknown:
		kind = attest.PolicyPCR
	case attest.PolicyPCR, attest.PolicyAuthorizedPCR:
	default:
		return nil, fmt.Errorf("attesttpm: quote: subject policy kind %d is not a policy kind", uint8(kind))
	}

	e := &attest.Evidence{
		Version:     attest.Version,
		Bank:        tpm2.TPMAlgSHA256,
		PCRs:        pcrs,
		AKPublic:    bytes.Clone(a.public),
		SealedPCRs:  sealedPCRs,
		PolicyKind:  kind,
		PolicyPIN:   s.Policy.PIN,
		IdentityKey: s.PublicKey.Marshal(),
	}
	if kind == attest.PolicyAuthorizedPCR {
		e.PolicySigner = bytes.Clone(s.Policy.Signer)
	}
	err = t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.quoteLocked(tpm, srk, binding, e); err != nil {
			return err
		}
		e.SRKName = bytes.Clone(srk.Name.Buffer)
		return a.certifyLocked(tpm, srk, inPub, inPriv, binding, e)
	})
	if err != nil {
		return nil, fmt.Errorf("attesttpm: quote: %w", err)
	}

	if kind == attest.PolicyAuthorizedPCR {
		e.ApprovedPolicy, e.Approval = approvalFor(e, s.Policy.Approvals)
	}

	msg := attest.PossessionMessage(req.Nonce, e.Attest)
	sig, err := req.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("attesttpm: quote: proof of possession: %w", err)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(idKey, msg, sig) {
		return nil, errors.New("attesttpm: quote: proof of possession does not verify with the subject's public key")
	}
	e.Possession = bytes.Clone(sig)

	_, err = attest.Verify(e, attest.VerifyOptions{Nonce: req.Nonce, TrustedAKName: a.name, AllowMissingCertify: true})
	if err != nil && !errors.Is(err, attest.ErrSealedAttributes) {
		// A sealed object with weak attributes is the verifier's call;
		// anything else is a bug here or a misbehaving TPM.
		return nil, fmt.Errorf("attesttpm: quote: evidence does not verify: %w", err)
	}
	return e, nil
}

// approvalFor returns the approval among approvals of the attest.PolicyPCR digest
// over the quoted values of e.SealedPCRs, or nils.
func approvalFor(e *attest.Evidence, approvals []Approval) (digest, sig []byte) {
	values := make([][]byte, len(e.SealedPCRs))
	for i, p := range e.SealedPCRs {
		if j := slices.Index(e.PCRs, p); j >= 0 {
			values[i] = e.PCRValues[j]
		}
	}
	want, err := tpmpolicy.PCR(e.Bank, e.SealedPCRs, values)
	if err != nil {
		return nil, nil
	}
	for _, a := range approvals {
		if bytes.Equal(a.Digest, want) && len(a.Signature) > 0 {
			return bytes.Clone(a.Digest), bytes.Clone(a.Signature)
		}
	}
	return nil, nil
}

// quoteLocked quotes e.PCRs with the attestation key and fills in e.Attest,
// e.Signature and e.PCRValues, starting over if the PCRs moved between the
// reads around the quote.
func (a *AK) quoteLocked(tpm transport.TPM, srk *tpmdev.SRK, binding []byte, e *attest.Evidence) error {
	for attempt := 1; ; attempt++ {
		signer, err := a.loadedLocked(tpm, srk)
		if err != nil {
			return err
		}
		before, counter, err := tpmdev.ReadPCRs(tpm, e.Bank, e.PCRs)
		if err != nil {
			return err
		}
		rsp, err := tpm2.Quote{
			SignHandle:     signer,
			QualifyingData: tpm2.TPM2BData{Buffer: binding},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      tpmdev.Selection(e.Bank, e.PCRs),
		}.Execute(tpm)
		if err != nil {
			if tpmdev.IsStaleHandle(err) && attempt < maxQuoteAttempts {
				continue // loadedLocked checks the AK and loads it again
			}
			return a.akCommandError("TPM2_Quote", err)
		}
		_, after, err := tpmdev.ReadPCRs(tpm, e.Bank, e.PCRs)
		if err != nil {
			return err
		}
		attest := bytes.Clone(rsp.Quoted.Bytes())
		if after == counter && quotedDigestIs(rsp.Quoted, before) {
			e.Attest = attest
			e.Signature = tpm2.Marshal(rsp.Signature)
			e.PCRValues = before
			return nil
		}
		if attempt == maxQuoteAttempts {
			return fmt.Errorf("PCRs kept changing during %d attempts to quote them", attempt)
		}
	}
}

// quotedDigestIs reports whether attest is a quote whose PCR digest is
// the SHA-256 of values' concatenation, as TPM2_Quote computes it.
func quotedDigestIs(quoted tpm2.TPM2BAttest, values [][]byte) bool {
	a, err := quoted.Contents()
	if err != nil || a.Magic != tpm2.TPMGeneratedValue || a.Type != tpm2.TPMSTAttestQuote {
		return false
	}
	q, err := a.Attested.Quote()
	if err != nil {
		return false
	}
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	return bytes.Equal(q.PCRDigest.Buffer, h.Sum(nil))
}

// certifyLocked has the attestation key certify that the sealed object is
// loaded under the SRK: it loads the object, runs TPM2_ReadPublic on it in
// an audit session and gets the session's audit digest signed. It fills in
// e.SealedPublic and, unless the endorsement hierarchy refuses,
// e.CertifyAttest and e.CertifySignature.
func (a *AK) certifyLocked(tpm transport.TPM, srk *tpmdev.SRK, pub *tpm2.TPM2BPublic, priv *tpm2.TPM2BPrivate, binding []byte, e *attest.Evidence) error {
	load, err := tpm2.Load{ParentHandle: srk.AuthHandle(), InPrivate: *priv, InPublic: *pub}.Execute(tpm)
	if err != nil {
		return fmt.Errorf("load sealed object: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: load.ObjectHandle}.Execute(tpm)

	sess, closeSession, err := tpm2.HMACSession(tpm, tpm2.TPMAlgSHA256, 16, tpm2.Audit())
	if err != nil {
		return fmt.Errorf("start audit session: %w", err)
	}
	defer closeSession()

	rp, err := tpm2.ReadPublic{
		ObjectHandle: tpm2.NamedHandle{Handle: load.ObjectHandle, Name: load.Name},
	}.Execute(tpm, sess)
	if err != nil {
		return fmt.Errorf("read sealed object: %w", err)
	}
	e.SealedPublic = tpm2.Marshal(rp.OutPublic)

	var rsp *tpm2.GetSessionAuditDigestResponse
	for attempt := 1; ; attempt++ {
		var signer tpm2.AuthHandle
		if signer, err = a.loadedLocked(tpm, srk); err != nil {
			return err
		}
		rsp, err = tpm2.GetSessionAuditDigest{
			PrivacyAdminHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			SignHandle:         signer,
			SessionHandle:      sess.Handle(),
			QualifyingData:     tpm2.TPM2BData{Buffer: binding},
			InScheme:           tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(tpm)
		// The command is not itself audited: if the AK went stale it can
		// be sent again with the AK loaded again.
		if attempt == 1 && tpmdev.IsStaleHandle(err) {
			continue
		}
		break
	}
	switch {
	case errors.Is(err, tpm2.TPMRCBadAuth), errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCHierarchy):
		// The endorsement hierarchy (the TPM's privacy administrator)
		// has a password or is disabled: go without certification.
		return nil
	case err != nil:
		return a.akCommandError("TPM2_GetSessionAuditDigest", err)
	}
	e.CertifyAttest = bytes.Clone(rsp.AuditInfo.Bytes())
	e.CertifySignature = tpm2.Marshal(rsp.Signature)
	return nil
}

// pcrSet checks a list of PCR indexes and returns it sorted without
// duplicates.
func pcrSet(what string, pcrs []int, mayBeEmpty bool) ([]int, error) {
	if len(pcrs) == 0 && !mayBeEmpty {
		return nil, fmt.Errorf("attesttpm: quote: no %s", what)
	}
	for _, p := range pcrs {
		if p < 0 || p >= tpmdev.NumPCRs {
			return nil, fmt.Errorf("attesttpm: quote: %s: PCR %d out of range 0 to %d", what, p, tpmdev.NumPCRs-1)
		}
	}
	out := slices.Compact(slices.Sorted(slices.Values(pcrs)))
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ed25519Key returns the Ed25519 key of an ssh-ed25519 public key.
func ed25519Key(k ssh.PublicKey) (ed25519.PublicKey, error) {
	ck, ok := k.(ssh.CryptoPublicKey)
	if !ok {
		return nil, errors.New("identity key is not an Ed25519 key")
	}
	pub, ok := ck.CryptoPublicKey().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("identity key is not an Ed25519 key")
	}
	return pub, nil
}
