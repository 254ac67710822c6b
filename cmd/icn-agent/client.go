package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/internal/daemon"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
)

func init() {
	register(&command{
		name:    "add",
		args:    "NAME [-t DURATION] [-c] [-h [user@]host ...] [--pin-file FILE]",
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
	confirm := fs.Bool("c", false, "ask through the agent's SSH_ASKPASS before every signature with the identity, until the next add without -c")
	pinFile := fs.String("pin-file", "", "read the identity's PIN from the first line of FILE instead of asking on the terminal")
	var dests stringList
	fs.Var(&dests, "h", "restrict the identity to SSH logins to this destination, [user@]host or host>[user@]host, as ssh-add -h (repeatable; until the next add without -h)")
	hostsFile := fs.String("H", "", "known_hosts file with the destinations' host keys (default ~/.ssh/known_hosts and known_hosts2)")
	storeDir := fs.String("store", "", "directory of sealed identities, to tell whether NAME has a PIN (default $XDG_DATA_HOME/icn-agent/identities)")
	pos, err := parseArgs(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	if *life < 0 || (*life > 0 && *life < time.Second) {
		return usagef("-t must be at least 1s")
	}
	cl, err := dialAgent(e, *socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	var pin []byte
	if *pinFile != "" || needsPIN(cl, *storeDir, name) {
		// The agent would ask through its own SSH_ASKPASS, which it may
		// not have (a console, a session over ssh): ask here.
		if pin, err = readPIN(*pinFile, name, false); err != nil {
			return err
		}
		defer secmem.Wipe(pin)
	}
	var dcs []agentsrv.DestinationConstraint
	if len(dests) > 0 {
		files := daemon.KnownHostsFiles(e.getenv)
		if *hostsFile != "" {
			files = []string{*hostsFile}
		}
		if dcs, err = agentsrv.ParseDestinations(dests, files...); err != nil {
			return err
		}
	}
	if pin == nil && !*confirm && dcs == nil {
		err = cl.Add(name, *life)
	} else {
		err = addWithOptions(cl, name, agentsrv.UnsealOptions{Lifetime: *life, Confirm: *confirm, PIN: pin, Destinations: dcs})
	}
	if err != nil {
		if errors.Is(err, client.ErrNotFound) {
			// The agent serves only the identities it could load: one
			// whose file is damaged, unreadable or a dangling link is
			// skipped, and only the store says why.
			return withHint(err, fmt.Sprintf("'icn-agent list' shows the identities in the store and why one cannot be used; the agent serves %s once %s.sealed loads", name, name))
		}
		return err
	}
	fmt.Fprintf(e.stdout, "unsealed %s\n", name)
	return nil
}

// needsPIN reports whether adding name takes a PIN: the store says the
// identity has one and the agent does not hold its seed already. A store
// that cannot be read says no (the agent may use another store): the
// agent then asks through its SSH_ASKPASS, or --pin-file gives the PIN.
func needsPIN(cl *client.Client, dir, name string) bool {
	if dir == "" {
		dir = sealstore.DefaultDir()
	}
	store, err := sealstore.Open(dir)
	if err != nil {
		return false
	}
	b, err := store.Load(name)
	if err != nil || !b.Policy.PIN {
		return false
	}
	if st, err := cl.Status(); err == nil {
		for _, is := range st.Identities {
			if is.Name == name && is.Unsealed {
				return false
			}
		}
	}
	return true
}

// addWithOptions sends an unseal@icn-agent request with a PIN, the
// confirm flag or destinations (agentsrv.RequestUnseal).
func addWithOptions(cl *client.Client, name string, o agentsrv.UnsealOptions) error {
	err := agentsrv.RequestUnseal(cl, name, o)
	var re *agentsrv.RefusedError
	if errors.As(err, &re) {
		return fmt.Errorf("unseal %s: refused by the agent (an icn-agent older than add -c and add with a PIN refuses them): %w", name, re.Err)
	}
	return err
}

func runStatus(e *env, args []string) error {
	c := lookup("status")
	fs := newFlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK)")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	_, err := parseArgs(e, c, fs, args, 0, "status takes no arguments")
	if err != nil {
		return err
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
	for _, is := range st.Identities {
		if is.LastUsed.IsZero() {
			continue
		}
		line := fmt.Sprintf("%s last signed %s ago for %s", is.Name, time.Since(is.LastUsed).Round(time.Second), is.LastPeer)
		if is.LastDest != "" {
			line += " to " + is.LastDest
		}
		fmt.Fprintln(e.stdout, line)
	}
	if st.SoftwareKeys > 0 {
		fmt.Fprintf(e.stdout, "%d software key(s) added with ssh-add\n", st.SoftwareKeys)
	}
	if l := st.Lockout; l != nil {
		fmt.Fprintf(e.stdout, "TPM dictionary-attack counter: %d of %d (wrong PINs; at %d every PIN identity is locked out)\n", l.Counter, l.Max, l.Max)
	}
	return nil
}

func writeStatusJSON(e *env, st *client.Status, metrics json.RawMessage) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(st.JSON(metrics))
}
