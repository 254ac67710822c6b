package agentsrv

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/internal/secmem"
)

// RefusedError means the agent refused an unseal@icn-agent request for an
// identity it serves without recording why: an agent that predates a
// field of the request (a PIN, Confirm) refuses it as malformed.
type RefusedError struct {
	Name string
	Err  error // the agent's reply
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("unseal %s: refused by the agent: %v", e.Name, e.Err)
}
func (e *RefusedError) Unwrap() error { return e.Err }

// RequestUnseal is the client side of unseal@icn-agent with options: it
// asks the agent cl is connected to to unseal identity name now, with o's
// PIN, confirmation, destinations and lifetime (client.Client.Add sends
// the plain request agents before them understand). The request holding
// the PIN is wiped once sent.
//
// The protocol carries no error text, so a failure is explained from the
// agent's status: an error wrapping client.ErrLocked, the identity's last
// unseal error as it is, client.ErrNotFound, or a *RefusedError;
// client.ErrNotICNAgent if the agent has no such extension.
func RequestUnseal(cl *client.Client, name string, o UnsealOptions) error {
	req, err := MarshalUnsealRequest(name, o)
	if err != nil {
		return err
	}
	_, err = cl.Agent().Extension(ExtUnseal, req)
	secmem.Wipe(req)
	if err == nil {
		return nil
	}
	if errors.Is(err, agent.ErrExtensionUnsupported) {
		return client.ErrNotICNAgent
	}
	st, serr := cl.Status()
	switch {
	case serr != nil:
	case st.Locked:
		return fmt.Errorf("unseal %s: %w", name, client.ErrLocked)
	default:
		for _, is := range st.Identities {
			if is.Name == name {
				if is.LastError != "" {
					return errors.New(is.LastError)
				}
				return &RefusedError{Name: name, Err: err}
			}
		}
		return fmt.Errorf("%w: %q", client.ErrNotFound, name)
	}
	return fmt.Errorf("unseal %s: %w", name, err)
}
