package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/attesttpm"
	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/recovery"
	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/tpmpolicy"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "ak",
		Args:    "",
		Summary: "Print this TPM's attestation key (created on first use): its name and PEM public key, to pin in verifiers.",
		Run:     runAK,
	})
	commands.Register(&cli.Command{
		Name:    "quote",
		Args:    "NAME --nonce HEX [-o FILE] [--pcrs LIST] [--tpm2-tools DIR]",
		Summary: "Ask the running agent for attestation evidence about an identity, bound to a verifier's nonce; writes JSON.",
		Run:     runQuote,
	})
	commands.Register(&cli.Command{
		Name:    "verify",
		Args:    "FILE --nonce HEX [--ak PEM | --ak-name HEX] [--key PUBFILE] [--pcr N=HEX ...]",
		Summary: "Verify attestation evidence offline. Exit 0 with a report, or non-zero naming the check that failed.",
		Run:     runVerify,
	})
}

func runAK(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("ak")
	_, err := commands.ParseN(e, c, fs, args, 0, "ak takes no arguments")
	if err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	ak, err := attesttpm.LoadOrCreateAK(ctx, tpm, attesttpm.AKPath(store.Dir()))
	if err != nil {
		return err
	}
	pin, err := ak.PinFile()
	if err != nil {
		return err
	}
	_, err = e.Stdout.Write(pin)
	return err
}

func parseNonce(s string) ([]byte, error) {
	if s == "" {
		return nil, cli.Usagef("--nonce HEX is required: a fresh random challenge of %d to %d bytes from the verifier", attest.MinNonceSize, attest.MaxNonceSize)
	}
	n, err := hex.DecodeString(s)
	if err != nil {
		return nil, cli.Usagef("--nonce: not hex: %v", err)
	}
	if len(n) < attest.MinNonceSize || len(n) > attest.MaxNonceSize {
		return nil, cli.Usagef("--nonce is %d bytes; want %d to %d", len(n), attest.MinNonceSize, attest.MaxNonceSize)
	}
	return n, nil
}

func runQuote(e *cli.Env, args []string) error {
	c := commands.Lookup("quote")
	fs := cli.FlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK)")
	nonceHex := fs.String("nonce", "", "the verifier's nonce, hex")
	out := fs.String("o", "", "write the evidence JSON here (default stdout); an existing file is not overwritten")
	var extra pcrList
	fs.Var(&extra, "pcrs", "extra PCRs to quote besides the identity's sealing PCRs")
	tools := fs.String("tpm2-tools", "", "also write quote.msg, quote.sig, quote.pcrs, ak.pub.pem and quote.qualification here, and print the tpm2_checkquote command")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	nonce, err := parseNonce(*nonceHex)
	if err != nil {
		return err
	}
	cl, key, err := servedIdentity(e, *socket, pos[0])
	if err != nil {
		return err
	}
	defer cl.Close()
	ev, err := attest.RequestEvidence(cl.Agent(), key, nonce, extra.pcrs)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if *tools != "" {
		cmd, err := ev.ExportTPM2Tools(*tools, nonce, key)
		if err != nil {
			return err
		}
		// On stderr, so that stdout stays the evidence alone.
		fmt.Fprintf(e.Stderr, "check the quote with tpm2-tools:\n  %s\n", cmd)
	}
	if *out == "" {
		_, err = e.Stdout.Write(data)
		return err
	}
	err = recovery.WriteNewFilePerm(*out, data, 0o644)
	if errors.Is(err, recovery.ErrFileExists) {
		return fmt.Errorf("%s exists; pick another file name (it is never overwritten)", *out)
	}
	return err
}

// servedIdentity connects to the agent and looks up the identity name it
// serves (client.ServedIdentity), saying what to do if it cannot.
func servedIdentity(e *cli.Env, socket, name string) (*client.Client, ssh.PublicKey, error) {
	cl, err := dialAgent(e, socket)
	if err != nil {
		return nil, nil, err
	}
	key, err := cl.ServedIdentity(name)
	switch {
	case errors.Is(err, client.ErrLocked):
		err = cli.WithHint(err, "unlock it with ssh-add -X")
	case errors.Is(err, client.ErrNotFound):
		err = cli.WithHint(fmt.Errorf("the agent serves no identity %q", name), "icn-agent status lists the identities it serves")
	}
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return cl, key, nil
}

// pcrValues is a flag.Value for repeated --pcr N=HEX.
type pcrValues map[int][]byte

func (p pcrValues) String() string { return "" }

func (p pcrValues) Set(v string) error {
	n, val, err := tpmpolicy.ParseValue(v)
	if err == nil {
		p[n] = val
	}
	return err
}

// maxEvidenceFile bounds what verify reads. Evidence JSON is at most
// 256 KiB (attest's own bound); a larger file is refused as too large
// before it is parsed.
const maxEvidenceFile = 1 << 20

func runVerify(e *cli.Env, args []string) error {
	c := commands.Lookup("verify")
	fs := cli.FlagSet(c)
	nonceHex := fs.String("nonce", "", "the nonce you sent, hex")
	akFile := fs.String("ak", "", "trust only this attestation key (PEM, as printed by icn-agent ak)")
	akName := fs.String("ak-name", "", "trust only the attestation key with this TPM name (hex)")
	keyFile := fs.String("key", "", "the identity's public key file (authorized_keys line) the evidence must be about")
	expected := pcrValues{}
	fs.Var(expected, "pcr", "expected PCR value, N=HEX (repeatable)")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one FILE")
	if err != nil {
		return err
	}
	nonce, err := parseNonce(*nonceHex)
	if err != nil {
		return err
	}
	data, err := safefile.Read(pos[0], maxEvidenceFile)
	if err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	var ev attest.Evidence
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	opts := attest.VerifyOptions{Nonce: nonce, ExpectedPCRs: expected}
	if *akFile != "" {
		data, err := safefile.Read(*akFile, maxKeyFile)
		if err == nil {
			opts.TrustedAK, err = attest.ParsePEMPublicKey(data)
		}
		if err != nil {
			return fmt.Errorf("--ak: %w", err)
		}
	}
	if *akName != "" {
		n, err := hex.DecodeString(*akName)
		if err != nil {
			return cli.Usagef("--ak-name: not hex")
		}
		opts.TrustedAKName = n
	}
	if *keyFile != "" {
		data, err := safefile.Read(*keyFile, maxKeyFile)
		if err == nil {
			opts.IdentityKey, _, _, _, err = ssh.ParseAuthorizedKey(data)
		}
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
	}
	res, err := attest.Verify(&ev, opts)
	if err != nil {
		return fmt.Errorf("evidence does not verify: %w", err)
	}
	return res.WriteText(e.Stdout, unpinnedNote)
}

// unpinnedNote is the advice that follows "NOT pinned" in a report.
const unpinnedNote = "pass --ak or --ak-name to trust only your TPM's key"
