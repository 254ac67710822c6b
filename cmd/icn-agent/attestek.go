package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/safefile"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "attest",
		Args:    "NAME --ek-roots FILE [-a SOCKET] [--json]",
		Summary: "Check a running agent's identity from scratch: its TPM's EK certificate against trusted roots, its attestation key by credential activation, then a fresh quote. Exits 0 only when all holds.",
		Run:     runAttest,
	})
}

// maxRootsFile bounds a bundle of trusted certificates.
const maxRootsFile = 1 << 20

// attestJSON is the --json output of icn-agent attest.
type attestJSON = attest.AgentVerdictJSON

// errAttestFailed is returned after the verdict is printed, for exit 1.
var errAttestFailed = errors.New("attestation failed")

func runAttest(e *cli.Env, args []string) error {
	c := commands.Lookup("attest")
	fs := cli.FlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK; a forwarded agent works)")
	roots := fs.String("ek-roots", "", "PEM bundle of the trusted TPM manufacturer roots and intermediates")
	asJSON := fs.Bool("json", false, "print the verdict as JSON")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	if *roots == "" {
		return cli.Usagef("--ek-roots is required: the roots that issued your TPM's endorsement key certificate")
	}
	data, err := safefile.Read(*roots, maxRootsFile)
	var trust attest.EKTrust
	if err == nil {
		trust, err = attest.ParseEKTrust(data)
	}
	if err != nil {
		return fmt.Errorf("--ek-roots: %w", err)
	}
	cl, key, err := servedIdentity(e, *socket, pos[0])
	if err != nil {
		return err
	}
	defer cl.Close()
	v, err := attest.AttestAgent(cl.Agent(), key, trust, attest.VerifyOptions{})
	if *asJSON {
		out, _ := json.MarshalIndent(attest.VerdictJSON(key, v, err), "", "  ")
		e.Stdout.Write(append(out, '\n'))
	} else if err == nil {
		v.WriteText(e.Stdout)
	}
	switch {
	case err != nil:
		return fmt.Errorf("attestation failed: %w", err)
	case !v.OK():
		return errAttestFailed
	}
	return nil
}
