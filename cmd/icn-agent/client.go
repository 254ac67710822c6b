package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/daemon"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "add",
		Args:    "NAME [-t DURATION] [-c] [-h [user@]host ...] [--pin-file FILE]",
		Summary: "Ask the running agent to unseal an identity now (and list it again after ssh-add -d).",
		Run:     runAdd,
	})
	commands.Register(&cli.Command{
		Name:    "status",
		Args:    "[--json]",
		Summary: "Show the running agent's identities: unsealed or not, expiry, unseal count, PCR mismatches, errors.",
		Run:     runStatus,
	})
}

// dialAgent connects to the agent at the given socket, or SSH_AUTH_SOCK.
func dialAgent(e *cli.Env, socket string) (*client.Client, error) {
	if socket == "" {
		socket = e.Getenv("SSH_AUTH_SOCK")
	}
	if socket == "" {
		return nil, fmt.Errorf("SSH_AUTH_SOCK is not set; start the agent with 'icn-agent serve &' and set SSH_AUTH_SOCK to the path it prints, or pass -a SOCKET")
	}
	return client.Dial(socket)
}

func runAdd(e *cli.Env, args []string) error {
	c := commands.Lookup("add")
	fs := cli.FlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK)")
	life := fs.Duration("t", 0, "keep the seed this long (default: the agent's auto_lock_timeout_secs)")
	confirm := fs.Bool("c", false, "ask through the agent's SSH_ASKPASS before every signature with the identity, until the next add without -c")
	pinFile := fs.String("pin-file", "", "read the identity's PIN from the first line of FILE instead of asking on the terminal")
	var dests cli.Strings
	fs.Var(&dests, "h", "restrict the identity to SSH logins to this destination, [user@]host or host>[user@]host, as ssh-add -h (repeatable; until the next add without -h)")
	hostsFile := fs.String("H", "", "known_hosts file with the destinations' host keys (default ~/.ssh/known_hosts and known_hosts2)")
	storeDir := fs.String("store", "", "directory of sealed identities, to tell whether NAME has a PIN (default $XDG_DATA_HOME/icn-agent/identities)")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	if *life < 0 || (*life > 0 && *life < time.Second) {
		return cli.Usagef("-t must be at least 1s")
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
		files := daemon.KnownHostsFiles(e.Getenv)
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
		err = agentsrv.RequestUnseal(cl, name, agentsrv.UnsealOptions{Lifetime: *life, Confirm: *confirm, PIN: pin, Destinations: dcs})
	}
	var re *agentsrv.RefusedError
	if errors.As(err, &re) {
		return fmt.Errorf("unseal %s: refused by the agent (an icn-agent older than add -c and add with a PIN refuses them): %w", name, re.Err)
	}
	if err != nil {
		if errors.Is(err, client.ErrNotFound) {
			// The agent serves only the identities it could load: one
			// whose file is damaged, unreadable or a dangling link is
			// skipped, and only the store says why.
			return cli.WithHint(err, fmt.Sprintf("'icn-agent list' shows the identities in the store and why one cannot be used; the agent serves %s once %s.sealed loads", name, name))
		}
		return err
	}
	fmt.Fprintf(e.Stdout, "unsealed %s\n", name)
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
	st, err := cl.Status()
	return err != nil || st.Identity(name) == nil || !st.Identity(name).Unsealed
}

func runStatus(e *cli.Env, args []string) error {
	c := commands.Lookup("status")
	fs := cli.FlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK)")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	_, err := commands.ParseN(e, c, fs, args, 0, "status takes no arguments")
	if err != nil {
		return err
	}
	cl, err := dialAgent(e, *socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	if *asJSON {
		j, err := cl.StatusJSON()
		if err != nil {
			return err
		}
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(j)
	}
	st, err := cl.Status()
	if err != nil {
		return err
	}
	if st.Locked {
		fmt.Fprintln(e.Stdout, "agent is locked (ssh-add -X to unlock)")
		return nil
	}
	return st.WriteText(e.Stdout, time.Now())
}
