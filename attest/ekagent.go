package attest

import (
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// EKExtension is the name of the agent protocol extension that asks
// icn-agent for its TPM's endorsement key certificate, the EK and its
// attestation key (EKInfo). The request has no content. A successful reply
// is SSH_AGENT_SUCCESS followed by (RFC 4251 types):
//
//	string  EK certificate, DER (empty if the TPM has none)
//	string  EK public area, TPM2B_PUBLIC
//	string  attestation key public area, TPM2B_PUBLIC
const EKExtension = "ek@icn-agent"

// ActivateExtension is the name of the agent protocol extension that has
// icn-agent's TPM open a credential made for its attestation key under its
// endorsement key (TPM2_ActivateCredential). Request content:
//
//	string  credential blob (TPM2B_ID_OBJECT contents)
//	string  encrypted secret (TPM2B_ENCRYPTED_SECRET contents)
//
// A successful reply is SSH_AGENT_SUCCESS followed by a string holding the
// credential's secret. A failure gets SSH_AGENT_EXTENSION_FAILURE.
const ActivateExtension = "activate@icn-agent"

// Bounds of the extensions' fields.
const (
	maxCredential = 1024
	maxEKCertWire = maxEKCert
)

type ekReply struct {
	Certificate []byte
	EKPublic    []byte
	AKPublic    []byte
}

type activateRequest struct {
	Blob   []byte
	Secret []byte
}

type activateReply struct {
	Secret []byte
}

// MarshalEKReply encodes info as the reply to an EKExtension request.
func MarshalEKReply(info *EKInfo) []byte {
	return ssh.Marshal(ekReply{Certificate: info.Certificate, EKPublic: info.EKPublic, AKPublic: info.AKPublic})
}

// ParseActivateRequest decodes the content of an ActivateExtension request.
func ParseActivateRequest(content []byte) (blob, secret []byte, err error) {
	var req activateRequest
	if err := ssh.Unmarshal(content, &req); err != nil {
		return nil, nil, fmt.Errorf("attest: malformed %s request: %w", ActivateExtension, err)
	}
	if len(req.Blob) == 0 || len(req.Blob) > maxCredential || len(req.Secret) == 0 || len(req.Secret) > maxCredential {
		return nil, nil, fmt.Errorf("attest: %s request: credential of %d and %d bytes, want 1 to %d each", ActivateExtension, len(req.Blob), len(req.Secret), maxCredential)
	}
	return req.Blob, req.Secret, nil
}

// MarshalActivateReply encodes the secret of an activated credential as the
// reply to an ActivateExtension request.
func MarshalActivateReply(secret []byte) []byte {
	return ssh.Marshal(activateReply{Secret: secret})
}

// RequestEKInfo asks an agent for its TPM's endorsement key and attestation
// key (EKExtension). Check the answer with VerifyEK.
func RequestEKInfo(a agent.ExtendedAgent) (*EKInfo, error) {
	reply, err := a.Extension(EKExtension, nil)
	if err != nil {
		return nil, extensionError(EKExtension, err)
	}
	var r ekReply
	if err := ssh.Unmarshal(reply, &r); err != nil {
		return nil, fmt.Errorf("attest: malformed %s reply: %w", EKExtension, err)
	}
	if len(r.Certificate) > maxEKCertWire || len(r.EKPublic) > maxTPM2BPublic || len(r.AKPublic) > maxTPM2BPublic {
		return nil, fmt.Errorf("attest: malformed %s reply: a field is too long", EKExtension)
	}
	return &EKInfo{Certificate: nonEmpty(r.Certificate), EKPublic: r.EKPublic, AKPublic: r.AKPublic}, nil
}

// RequestActivation has the agent's TPM open ch and checks the secret it
// returns (ErrActivationFailed).
func RequestActivation(a agent.ExtendedAgent, ch *Challenge) error {
	reply, err := a.Extension(ActivateExtension, ssh.Marshal(activateRequest{Blob: ch.Blob, Secret: ch.Secret}))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrActivationFailed, extensionError(ActivateExtension, err))
	}
	var r activateReply
	if err := ssh.Unmarshal(reply, &r); err != nil {
		return fmt.Errorf("attest: malformed %s reply: %w", ActivateExtension, err)
	}
	return ch.Check(r.Secret)
}

func extensionError(name string, err error) error {
	if errors.Is(err, agent.ErrExtensionUnsupported) {
		return fmt.Errorf("attest: the agent does not support %s", name)
	}
	return fmt.Errorf("attest: the agent refused %s: %w", name, err)
}

// AgentVerdict is the outcome of AttestAgent.
type AgentVerdict struct {
	// EK is the endorsement key whose certificate chains to a trusted
	// root, and whose TPM holds the attestation key.
	EK *VerifiedEK
	// Result is the verified evidence about the identity, signed by that
	// attestation key.
	Result *Result
}

// AttestAgent runs the whole exchange a verifier that has never seen the
// machine makes with an agent (which may be a forwarded one): it reads the
// EK certificate and the AK (EKExtension), checks the chain against trust
// and that the certificate is for that EK (VerifyEK), proves the AK lives
// in the same TPM by credential activation (ActivateExtension), then asks
// for evidence about key bound to a fresh nonce (Extension) and verifies
// it with the AK pinned (Verify). Each failure has its own error:
// ErrNoEKCertificate, ErrEKChainUntrusted, ErrEKMismatch,
// ErrActivationFailed, then Verify's.
func AttestAgent(a agent.ExtendedAgent, key ssh.PublicKey, trust EKTrust, opts VerifyOptions) (*AgentVerdict, error) {
	info, err := RequestEKInfo(a)
	if err != nil {
		return nil, err
	}
	ek, err := VerifyEK(info, trust)
	if err != nil {
		return nil, err
	}
	ch, err := ek.NewChallenge(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := RequestActivation(a, ch); err != nil {
		return nil, err
	}
	if opts.Nonce == nil {
		opts.Nonce = make([]byte, 32)
		if _, err := rand.Read(opts.Nonce); err != nil {
			return nil, err
		}
	}
	e, err := RequestEvidence(a, key, opts.Nonce, nil)
	if err != nil {
		return nil, err
	}
	opts.IdentityKey = key
	opts.TrustedAKName = ek.AKName()
	opts.TrustedAK = nil
	res, err := Verify(e, opts)
	if err != nil {
		return nil, err
	}
	return &AgentVerdict{EK: ek, Result: res}, nil
}
