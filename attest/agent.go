package attest

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Extension is the name of the agent protocol extension that asks
// icn-agent for evidence about one of its identities.
//
// Request content (RFC 4251 types):
//
//	string  identity public key, SSH wire format
//	string  nonce, MinNonceSize to MaxNonceSize bytes
//	string  extra PCRs to quote besides the sealing ones, one byte per
//	        PCR index (SHA-256 bank); may be empty
//
// A successful reply is SSH_AGENT_SUCCESS followed by a string holding the
// evidence in its SSH wire encoding (MarshalSSH). A bad request, a locked
// agent or a TPM failure gets SSH_AGENT_EXTENSION_FAILURE.
const Extension = "quote@icn-agent"

// AgentRequest is the content of an Extension request.
type AgentRequest struct {
	Key       []byte
	Nonce     []byte
	ExtraPCRs []byte
}

type agentReply struct {
	Evidence []byte `sshtype:"6"`
}

// ParseAgentRequest decodes and checks the content of an Extension
// request: the key must parse, the nonce be of a valid size and the PCRs
// within 0-23.
func ParseAgentRequest(content []byte) (ssh.PublicKey, []byte, []int, error) {
	var req AgentRequest
	if err := ssh.Unmarshal(content, &req); err != nil {
		return nil, nil, nil, fmt.Errorf("attest: malformed %s request: %w", Extension, err)
	}
	key, err := ssh.ParsePublicKey(req.Key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("attest: %s request: identity key: %w", Extension, err)
	}
	if n := len(req.Nonce); n < MinNonceSize || n > MaxNonceSize {
		return nil, nil, nil, fmt.Errorf("attest: %s request: nonce is %d bytes, want %d to %d", Extension, n, MinNonceSize, MaxNonceSize)
	}
	var pcrs []int
	for _, p := range req.ExtraPCRs {
		if p >= 24 {
			return nil, nil, nil, fmt.Errorf("attest: %s request: PCR %d out of range 0-23", Extension, p)
		}
		pcrs = append(pcrs, int(p))
	}
	return key, req.Nonce, pcrs, nil
}

// MarshalAgentReply encodes evidence as the reply to an Extension request.
func MarshalAgentReply(e *Evidence) []byte {
	return ssh.Marshal(agentReply{Evidence: e.MarshalSSH()})
}

// RequestEvidence asks an agent (icn-agent, through any
// agent.ExtendedAgent, such as agent.NewClient on SSH_AUTH_SOCK) for
// evidence about the identity key, bound to nonce, quoting extraPCRs
// besides the identity's sealing PCRs. The evidence is decoded but not
// verified: call Verify with the same nonce.
func RequestEvidence(a agent.ExtendedAgent, key ssh.PublicKey, nonce []byte, extraPCRs []int) (*Evidence, error) {
	if n := len(nonce); n < MinNonceSize || n > MaxNonceSize {
		return nil, fmt.Errorf("attest: nonce is %d bytes, want %d to %d", n, MinNonceSize, MaxNonceSize)
	}
	req := AgentRequest{Key: key.Marshal(), Nonce: nonce}
	for _, p := range extraPCRs {
		if p < 0 || p >= 24 {
			return nil, fmt.Errorf("attest: PCR %d out of range 0-23", p)
		}
		req.ExtraPCRs = append(req.ExtraPCRs, byte(p))
	}
	reply, err := a.Extension(Extension, ssh.Marshal(req))
	if errors.Is(err, agent.ErrExtensionUnsupported) {
		return nil, fmt.Errorf("attest: the agent does not support %s (is it icn-agent?)", Extension)
	}
	if err != nil {
		return nil, fmt.Errorf("attest: the agent refused the quote request (it is locked, does not serve the identity, or its TPM failed): %w", err)
	}
	var r agentReply
	if err := ssh.Unmarshal(reply, &r); err != nil {
		return nil, fmt.Errorf("attest: malformed %s reply: %w", Extension, err)
	}
	return ParseSSH(r.Evidence)
}
