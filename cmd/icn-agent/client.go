package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv/client"
)

func init() {
	register(&command{
		name:    "add",
		args:    "NAME [-t DURATION]",
		summary: "Ask the running agent to unseal an identity now (and list it again after ssh-add -d).",
		run:     runAdd,
	})
	register(&command{
		name:    "status",
		args:    "[--json]",
		summary: "Show the running agent's identities: unsealed or not, expiry, unseal count, PCR mismatches, errors.",
		run:     runStatus,
	})
}

// dialAgent connects to the agent at the given socket, or SSH_AUTH_SOCK.
func dialAgent(e *env, socket string) (*client.Client, error) {
	if socket == "" {
		socket = e.getenv("SSH_AUTH_SOCK")
	}
	if socket == "" {
		return nil, fmt.Errorf("SSH_AUTH_SOCK is not set; start the agent with 'icn-agent serve &' and set SSH_AUTH_SOCK to the path it prints, or pass -a SOCKET")
	}
	return client.Dial(socket)
}

func runAdd(e *env, args []string) error {
	c := lookup("add")
	fs := newFlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK)")
	life := fs.Duration("t", 0, "keep the seed this long (default: the agent's auto_lock_timeout_secs)")
	pos, err := parseFlags(e, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one NAME")
	}
	if *life < 0 || (*life > 0 && *life < time.Second) {
		return usagef("-t must be at least 1s")
	}
	cl, err := dialAgent(e, *socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Add(pos[0], *life); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			// The agent serves only the identities it could load: one
			// whose file is damaged, unreadable or a dangling link is
			// skipped, and only the store says why.
			return withHint(err, fmt.Sprintf("'icn-agent list' shows the identities in the store and why one cannot be used; the agent serves %s once %s.sealed loads", pos[0], pos[0]))
		}
		return err
	}
	fmt.Fprintf(e.stdout, "unsealed %s\n", pos[0])
	return nil
}

func runStatus(e *env, args []string) error {
	c := lookup("status")
	fs := newFlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK)")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	pos, err := parseFlags(e, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("status takes no arguments")
	}
	cl, err := dialAgent(e, *socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := cl.Status()
	if err != nil {
		return err
	}
	if *asJSON {
		var m json.RawMessage
		if !st.Locked {
			// Counters, if the agent keeps them (serve --metrics-listen).
			m, err = cl.Metrics()
			if errors.Is(err, agent.ErrExtensionUnsupported) {
				m, err = nil, nil
			}
			if err != nil {
				return err
			}
		}
		return writeStatusJSON(e, st, m)
	}
	if st.Locked {
		fmt.Fprintln(e.stdout, "agent is locked (ssh-add -X to unlock)")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFINGERPRINT\tSTATE\tEXPIRES\tUNSEALS\tNOTE")
	for _, is := range st.Identities {
		state := "sealed"
		if is.Unsealed {
			state = "unsealed"
		}
		if is.Hidden {
			state += ",hidden"
		}
		expires := "-"
		if !is.Expiry.IsZero() {
			expires = time.Until(is.Expiry).Round(time.Second).String()
		}
		note := "-"
		switch {
		case len(is.PCRMismatch) > 0:
			note = "PCR mismatch: " + joinInts(is.PCRMismatch)
		case is.LastError != "":
			note = is.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", is.Name, is.Fingerprint, state, expires, is.UnsealCount, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.SoftwareKeys > 0 {
		fmt.Fprintf(e.stdout, "%d software key(s) added with ssh-add\n", st.SoftwareKeys)
	}
	if l := st.Lockout; l != nil {
		fmt.Fprintf(e.stdout, "TPM dictionary-attack counter: %d of %d (wrong PINs; at %d every PIN identity is locked out)\n", l.Counter, l.Max, l.Max)
	}
	return nil
}

// statusJSON is the JSON form of the agent's status, for scripts.
type statusJSON struct {
	Locked       bool                 `json:"locked"`
	SoftwareKeys int                  `json:"software_keys"`
	Identities   []identityStatusJSON `json:"identities"`
	// Lockout is the TPM's dictionary-attack state (wrong PINs).
	Lockout *client.LockoutStatus `json:"lockout,omitempty"`
	// Metrics are the agent's counters (see internal/metrics), present
	// when it runs with --metrics-listen and is not locked.
	Metrics json.RawMessage `json:"metrics,omitempty"`
}

type identityStatusJSON struct {
	Name        string     `json:"name"`
	Fingerprint string     `json:"fingerprint"`
	Unsealed    bool       `json:"unsealed"`
	Expiry      *time.Time `json:"expiry,omitempty"`
	UnsealCount uint64     `json:"unseal_count"`
	Hidden      bool       `json:"hidden"`
	PCRMismatch []int      `json:"pcr_mismatch,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
}

func writeStatusJSON(e *env, st *client.Status, metrics json.RawMessage) error {
	out := statusJSON{Locked: st.Locked, SoftwareKeys: st.SoftwareKeys, Identities: []identityStatusJSON{}, Lockout: st.Lockout, Metrics: metrics}
	for _, is := range st.Identities {
		j := identityStatusJSON{
			Name: is.Name, Fingerprint: is.Fingerprint, Unsealed: is.Unsealed, UnsealCount: is.UnsealCount,
			Hidden: is.Hidden, PCRMismatch: is.PCRMismatch, LastError: is.LastError,
		}
		if !is.Expiry.IsZero() {
			t := is.Expiry.UTC()
			j.Expiry = &t
		}
		out.Identities = append(out.Identities, j)
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
