package client

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/internal/didkey"
)

// Backends reported in Identity.Backend.
const (
	BackendTPM      = "tpm"
	BackendSoftware = "software"
)

// Errors the client returns, testable with errors.Is.
var (
	// ErrLocked means the agent is locked (ssh-add -x).
	ErrLocked = errors.New("client: agent is locked")
	// ErrNotFound means the agent serves no identity of that name.
	ErrNotFound = errors.New("client: the agent has no such identity")
	// ErrNoSocket means no socket was given and SSH_AUTH_SOCK is not set.
	ErrNoSocket = errors.New("client: no agent socket: SSH_AUTH_SOCK is not set")
	// ErrNotICNAgent means the agent does not know the icn-agent
	// extension a method needs.
	ErrNotICNAgent = errors.New("client: the agent does not support sealed identities (not an icn-agent?)")
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

// Identity is a key the agent lists, with what the client could learn
// about it.
type Identity struct {
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
			return nil, ErrNoSocket
		}
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("client: connect to agent: %w", err)
	}
	return &Client{conn: c, agent: agent.NewClient(c)}, nil
}

// Close closes the connection to the agent.
func (c *Client) Close() error { return c.conn.Close() }

// List returns the keys the agent lists, in its order, each marked with
// its backend as reported by the status@icn-agent extension.
func (c *Client) List() ([]Identity, error) {
	keys, err := c.agent.List()
	if err != nil {
		return nil, fmt.Errorf("client: list keys: %w", err)
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
	out := make([]Identity, 0, len(keys))
	for _, k := range keys {
		pub, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			return nil, fmt.Errorf("client: agent listed a malformed key: %w", err)
		}
		base := pub
		if cert, ok := pub.(*ssh.Certificate); ok {
			base = cert.Key
		}
		id := Identity{Key: pub, Comment: k.Comment, Backend: BackendSoftware}
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
		return nil, fmt.Errorf("client: sign: %w", err)
	}
	return sig, nil
}

// Add has the agent unseal identity name now, list it again if it was
// removed with ssh-add -d, and keep its seed for lifetime (0 for the
// agent's default). Lifetimes are rounded up to whole seconds.
//
// The agent protocol carries no error text: on failure Add asks the
// agent's status why, and returns an error wrapping ErrLocked or
// ErrNotFound, or carrying the agent's last unseal error for the
// identity. Against an agent without the extension it returns
// ErrNotICNAgent.
func (c *Client) Add(name string, lifetime time.Duration) error {
	if lifetime < 0 {
		return fmt.Errorf("client: negative lifetime %v", lifetime)
	}
	secs := (lifetime + time.Second - 1) / time.Second
	if secs > math.MaxUint32 {
		return fmt.Errorf("client: lifetime %v too long", lifetime)
	}
	req := ssh.Marshal(&unsealRequest{Name: name, LifetimeSecs: uint32(secs)})
	reply, err := c.agent.Extension(ExtUnseal, req)
	if errors.Is(err, agent.ErrExtensionUnsupported) {
		return ErrNotICNAgent
	}
	if err != nil {
		return c.explainAddFailure(name, err)
	}
	if len(reply) == 0 || reply[0] != msgSuccess {
		return errors.New("client: unexpected reply to unseal request")
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
		return fmt.Errorf("client: unseal %s: %w", name, ErrLocked)
	default:
		for _, is := range st.Identities {
			if is.Name == name {
				if is.LastError != "" {
					// The agent's own words, which name the identity
					// and the step that failed already.
					return errors.New(is.LastError)
				}
				return fmt.Errorf("client: unseal %s: %w", name, err)
			}
		}
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return fmt.Errorf("client: unseal %s: %w", name, err)
}

// Metrics returns the agent's counters, as reported by the
// metrics@icn-agent extension: a JSON object. Against an agent that
// keeps no metrics the error wraps agent.ErrExtensionUnsupported.
func (c *Client) Metrics() (json.RawMessage, error) {
	reply, err := c.agent.Extension(ExtMetrics, nil)
	if err != nil {
		return nil, fmt.Errorf("client: metrics: %w", err)
	}
	var r metricsReply
	if err := ssh.Unmarshal(reply, &r); err != nil {
		return nil, fmt.Errorf("client: malformed metrics reply: %w", err)
	}
	if !json.Valid([]byte(r.JSON)) {
		return nil, errors.New("client: malformed metrics reply: not JSON")
	}
	return json.RawMessage(r.JSON), nil
}

// Status returns the agent's status@icn-agent report. Against an agent
// without the extension the error wraps agent.ErrExtensionUnsupported.
func (c *Client) Status() (*Status, error) {
	reply, err := c.agent.Extension(ExtStatus, nil)
	if err != nil {
		return nil, fmt.Errorf("client: status: %w", err)
	}
	return ParseStatus(reply)
}

// ServedIdentity returns the public key of the sealed identity name that
// the agent serves, for requests about it (such as attest.RequestEvidence).
// The error wraps ErrLocked while the agent is locked and ErrNotFound if
// it serves no such identity.
func (c *Client) ServedIdentity(name string) (ssh.PublicKey, error) {
	st, err := c.Status()
	if err != nil {
		return nil, err
	}
	if st.Locked {
		return nil, ErrLocked
	}
	is := st.Identity(name)
	if is == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return is.PublicKey, nil
}

// Extensions returns the names of the extensions the agent supports (its
// answer to the standard query extension). Against an agent without
// query the error wraps agent.ErrExtensionUnsupported.
func (c *Client) Extensions() ([]string, error) {
	reply, err := c.agent.Extension(ExtQuery, nil)
	if err != nil {
		return nil, fmt.Errorf("client: query: %w", err)
	}
	return parseQuery(reply)
}
