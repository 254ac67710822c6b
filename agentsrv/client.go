package agentsrv

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/icn/icn-agent/internal/didkey"
	"math"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Backends reported in ClientIdentity.Backend.
const (
	BackendTPM      = "tpm"
	BackendSoftware = "software"
)

// Client talks to a running agent (icn-agent or any ssh-agent) over its
// socket; it is what ICN tooling and the icn-agent CLI use. Methods that
// rely on icn-agent extensions degrade gracefully against other agents
// where they can. A Client is safe for concurrent use.
type Client struct {
	conn  net.Conn
	agent agent.ExtendedAgent
}

// Agent returns the underlying x/crypto agent client, for requests this
// type has no method for (such as attest.RequestEvidence).
func (c *Client) Agent() agent.ExtendedAgent { return c.agent }

// ClientIdentity is a key the agent lists, with what the client could
// learn about it.
type ClientIdentity struct {
	// Key is the listed key: a public key or a certificate.
	Key ssh.PublicKey
	// Comment is the comment the agent lists the key with.
	Comment string
	// Name is the sealed identity's name, empty for a software key.
	Name string
	// DIDKey is the did:key of an Ed25519 key (for a certificate, of its
	// key), empty for other key types.
	DIDKey string
	// HardwareBacked reports whether the key is a TPM-sealed identity.
	HardwareBacked bool
	// Backend is BackendTPM for a sealed identity and BackendSoftware for
	// anything else, including every key of an agent without the
	// status@icn-agent extension.
	Backend string
}

// Dial connects to the agent listening on the unix socket path, or on
// $SSH_AUTH_SOCK if path is empty.
func Dial(path string) (*Client, error) {
	if path == "" {
		path = os.Getenv("SSH_AUTH_SOCK")
		if path == "" {
			return nil, errors.New("agentsrv: no agent socket: SSH_AUTH_SOCK is not set")
		}
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agentsrv: connect to agent: %w", err)
	}
	return &Client{conn: c, agent: agent.NewClient(c)}, nil
}

// Close closes the connection to the agent.
func (c *Client) Close() error { return c.conn.Close() }

// List returns the keys the agent lists, in its order, each marked with
// its backend as reported by the status@icn-agent extension.
func (c *Client) List() ([]ClientIdentity, error) {
	keys, err := c.agent.List()
	if err != nil {
		return nil, fmt.Errorf("agentsrv: list keys: %w", err)
	}
	st, err := c.Status()
	switch {
	case errors.Is(err, agent.ErrExtensionUnsupported):
		st = &Status{} // another agent: everything is software
	case err != nil:
		return nil, err
	}
	sealedByKey := map[string]string{}
	for _, is := range st.Identities {
		sealedByKey[string(is.PublicKey.Marshal())] = is.Name
	}
	out := make([]ClientIdentity, 0, len(keys))
	for _, k := range keys {
		pub, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			return nil, fmt.Errorf("agentsrv: agent listed a malformed key: %w", err)
		}
		base := pub
		if cert, ok := pub.(*ssh.Certificate); ok {
			base = cert.Key
		}
		id := ClientIdentity{Key: pub, Comment: k.Comment, Backend: BackendSoftware}
		if name, ok := sealedByKey[string(base.Marshal())]; ok {
			id.Name, id.HardwareBacked, id.Backend = name, true, BackendTPM
		}
		if cpk, ok := base.(ssh.CryptoPublicKey); ok {
			if edPub, ok := cpk.CryptoPublicKey().(ed25519.PublicKey); ok {
				id.DIDKey = didkey.Encode(edPub)
			}
		}
		out = append(out, id)
	}
	return out, nil
}

// Sign asks the agent to sign data with key.
func (c *Client) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	sig, err := c.agent.Sign(key, data)
	if err != nil {
		return nil, fmt.Errorf("agentsrv: sign: %w", err)
	}
	return sig, nil
}

// Add has the agent unseal identity name now, list it again if it was
// removed with ssh-add -d, and keep its seed for lifetime (0 for the
// agent's default). Lifetimes are rounded up to whole seconds.
func (c *Client) Add(name string, lifetime time.Duration) error {
	if lifetime < 0 {
		return fmt.Errorf("agentsrv: negative lifetime %v", lifetime)
	}
	secs := (lifetime + time.Second - 1) / time.Second
	if secs > math.MaxUint32 {
		return fmt.Errorf("agentsrv: lifetime %v too long", lifetime)
	}
	req := ssh.Marshal(&unsealRequest{Name: name, LifetimeSecs: uint32(secs)})
	reply, err := c.agent.Extension(ExtUnseal, req)
	if errors.Is(err, agent.ErrExtensionUnsupported) {
		return errors.New("agentsrv: the agent does not support sealed identities (not an icn-agent?)")
	}
	if err != nil {
		// The protocol carries no error text: ask the agent what went
		// wrong with this identity.
		return c.explainAddFailure(name, err)
	}
	if len(reply) == 0 || reply[0] != msgSuccess {
		return errors.New("agentsrv: unexpected reply to unseal request")
	}
	return nil
}

// explainAddFailure turns a bare extension failure into an error that
// says why, from the agent's status.
func (c *Client) explainAddFailure(name string, err error) error {
	st, serr := c.Status()
	switch {
	case serr != nil:
	case st.Locked:
		return fmt.Errorf("agentsrv: unseal %s: %w", name, ErrLocked)
	default:
		for _, is := range st.Identities {
			if is.Name == name {
				if is.LastError != "" {
					return fmt.Errorf("agentsrv: unseal %s: %s", name, is.LastError)
				}
				return fmt.Errorf("agentsrv: unseal %s: %w", name, err)
			}
		}
		return fmt.Errorf("%w: the agent has no identity named %q", ErrNotFound, name)
	}
	return fmt.Errorf("agentsrv: unseal %s: %w", name, err)
}

// Metrics returns the agent's counters, as reported by the
// metrics@icn-agent extension: a JSON object. Against an agent that
// keeps no metrics the error wraps agent.ErrExtensionUnsupported.
func (c *Client) Metrics() (json.RawMessage, error) {
	reply, err := c.agent.Extension(ExtMetrics, nil)
	if err != nil {
		return nil, fmt.Errorf("agentsrv: metrics: %w", err)
	}
	var r metricsReply
	if err := ssh.Unmarshal(reply, &r); err != nil {
		return nil, fmt.Errorf("agentsrv: malformed metrics reply: %w", err)
	}
	if !json.Valid([]byte(r.JSON)) {
		return nil, errors.New("agentsrv: malformed metrics reply: not JSON")
	}
	return json.RawMessage(r.JSON), nil
}

// Status returns the agent's status@icn-agent report. Against an agent
// without the extension the error wraps agent.ErrExtensionUnsupported.
func (c *Client) Status() (*Status, error) {
	reply, err := c.agent.Extension(ExtStatus, nil)
	if err != nil {
		return nil, fmt.Errorf("agentsrv: status: %w", err)
	}
	return parseStatus(reply)
}
