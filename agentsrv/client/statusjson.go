package client

import (
	"encoding/json"
	"errors"
	"time"

	"golang.org/x/crypto/ssh/agent"
)

// StatusJSON is the JSON form of a Status, for scripts (icn-agent status
// --json prints it). Its field names are part of the client's contract:
// fields may be added, never renamed or removed. Times are UTC RFC 3339,
// and absent (rather than zero) when the event has not happened.
type StatusJSON struct {
	Locked       bool                 `json:"locked"`
	SoftwareKeys int                  `json:"software_keys"`
	Identities   []IdentityStatusJSON `json:"identities"`
	// Lockout is the TPM's dictionary-attack state (wrong PINs).
	Lockout *LockoutStatus `json:"lockout,omitempty"`
	// Metrics are the agent's counters (see internal/metrics), present
	// when it runs with --metrics-listen and is not locked.
	Metrics json.RawMessage `json:"metrics,omitempty"`
}

// IdentityStatusJSON is the JSON form of an IdentityStatus, without its
// keys (the fingerprint names the key).
type IdentityStatusJSON struct {
	Name        string     `json:"name"`
	Fingerprint string     `json:"fingerprint"`
	Unsealed    bool       `json:"unsealed"`
	Expiry      *time.Time `json:"expiry,omitempty"`
	UnsealCount uint64     `json:"unseal_count"`
	Hidden      bool       `json:"hidden"`
	PCRMismatch []int      `json:"pcr_mismatch,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// The last signature since the agent started: when, for which
	// process, to which host.
	LastUsed *time.Time `json:"last_used,omitempty"`
	LastPeer string     `json:"last_peer,omitempty"`
	LastDest string     `json:"last_dest,omitempty"`
}

// JSON returns st in its JSON form, with the agent's metrics (nil if it
// keeps none). Identities is never null, so that scripts can iterate it.
func (st *Status) JSON(metrics json.RawMessage) StatusJSON {
	out := StatusJSON{Locked: st.Locked, SoftwareKeys: st.SoftwareKeys, Identities: []IdentityStatusJSON{}, Lockout: st.Lockout, Metrics: metrics}
	for _, is := range st.Identities {
		j := IdentityStatusJSON{
			Name: is.Name, Fingerprint: is.Fingerprint, Unsealed: is.Unsealed, UnsealCount: is.UnsealCount,
			Hidden: is.Hidden, PCRMismatch: is.PCRMismatch, LastError: is.LastError,
		}
		if !is.Expiry.IsZero() {
			t := is.Expiry.UTC()
			j.Expiry = &t
		}
		if !is.LastUsed.IsZero() {
			t := is.LastUsed.UTC()
			j.LastUsed, j.LastPeer, j.LastDest = &t, is.LastPeer, is.LastDest
		}
		out.Identities = append(out.Identities, j)
	}
	return out
}

// StatusJSON returns the agent's status in its JSON form, with its
// counters when it keeps them (metrics@icn-agent) and is not locked.
func (c *Client) StatusJSON() (StatusJSON, error) {
	st, err := c.Status()
	if err != nil {
		return StatusJSON{}, err
	}
	var m json.RawMessage
	if !st.Locked {
		m, err = c.Metrics()
		if errors.Is(err, agent.ErrExtensionUnsupported) {
			m, err = nil, nil
		}
		if err != nil {
			return StatusJSON{}, err
		}
	}
	return st.JSON(m), nil
}
