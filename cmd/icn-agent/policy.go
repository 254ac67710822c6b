package main

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/recovery"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// Signed PCR policies (see docs/pcr-policies.md).
//
// A policy signing key is an ECDSA P-256 key pair: "policy-key create
// FILE" writes the private key to FILE (PKCS#8 PEM, 0600; keep it
// offline) and the public key to FILE.pub (PKIX PEM). Identities sealed
// with "keygen --signed-policy FILE.pub" unseal under any PCR values for
// which the store holds a policy signed by that key: "policy sign" signs
// values (the TPM's current ones, or N=HEX lines from a file) into
// STORE/policies/DIGEST-KEYID.policy. Several policies coexist, so the
// values of a new firmware can be signed before it is installed, while
// the old ones keep working.

func init() {
	commands.Register(&cli.Command{
		Name:    "policy-key",
		Args:    "create FILE",
		Summary: "Create an ECDSA P-256 policy signing key: FILE holds the private key (keep it offline), FILE.pub the public key for keygen --signed-policy.",
		Run:     runPolicyKey,
	})
	commands.Register(&cli.Command{
		Name:    "policy",
		Args:    "sign --key FILE [--pcrs 0,7] [--values current|FILE] [--comment TEXT] [-o OUT] | list",
		Summary: "Sign PCR values under which identities sealed with --signed-policy may unseal (kept in STORE/policies), or list the signed policies.",
		Run:     runPolicy,
	})
}

func runPolicyKey(e *cli.Env, args []string) error {
	c := commands.Lookup("policy-key")
	fs := cli.FlagSet(c)
	pos, err := commands.Parse(e, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "create" {
		return cli.Usagef("want create FILE")
	}
	file := pos[1]
	pubFile := file + ".pub"
	for _, p := range []string{file, pubFile} {
		if err := checkNewFile(p, "key file"); err != nil {
			return err
		}
	}
	key, privPEM, err := sealstore.NewPolicySigningKey()
	if err != nil {
		return err
	}
	defer secmem.Wipe(privPEM)
	if err := createFile(file, privPEM, 0o600); err != nil {
		return err
	}
	if err := createFile(pubFile, key.PEM(), 0o644); err != nil {
		os.Remove(file)
		return fmt.Errorf("%w; nothing was kept", err)
	}
	fmt.Fprintf(e.Stdout, "policy key %s\nprivate key: %s (keep it offline: whoever holds it decides which PCR values unseal)\npublic key:  %s (for icn-agent keygen --signed-policy)\n", key.ID(), file, pubFile)
	return nil
}

// createFile writes data to the new file path (recovery.WriteNewFilePerm).
func createFile(path string, data []byte, perm os.FileMode) error {
	return fileExistsError(recovery.WriteNewFilePerm(path, data, perm), path, "file")
}

// readPolicyKey reads a policy key's public half (FILE.pub of policy-key
// create).
func readPolicyKey(path string) (*sealstore.PolicyKey, error) {
	key, err := sealstore.ReadPolicyKeyFile(path)
	switch {
	case errors.Is(err, sealstore.ErrPrivatePolicyKey):
		return nil, fmt.Errorf("%w; pass its public half (%s.pub, from icn-agent policy-key create), and keep the private key offline", err, path)
	case errors.Is(err, sealstore.ErrNotPolicyKey):
		return nil, fmt.Errorf("%w (want the FILE.pub that icn-agent policy-key create wrote)", err)
	}
	return key, err
}

// readPolicySigningKey reads a policy key's private half.
func readPolicySigningKey(path string) (*ecdsa.PrivateKey, error) {
	key, err := sealstore.ReadPolicySigningKeyFile(path)
	switch {
	case errors.Is(err, sealstore.ErrNoPEM):
		return nil, fmt.Errorf("%w (want the FILE of icn-agent policy-key create)", err)
	case errors.Is(err, sealstore.ErrPublicPolicyKey):
		return nil, fmt.Errorf("%w; signing needs the private key (the FILE of icn-agent policy-key create, without .pub)", err)
	case errors.Is(err, sealstore.ErrNotPolicyKey):
		return nil, fmt.Errorf("%w; create a policy key with icn-agent policy-key create", err)
	}
	return key, err
}

func runPolicy(e *cli.Env, args []string) error {
	c := commands.Lookup("policy")
	if len(args) > 0 {
		switch args[0] {
		case "sign":
			return runPolicySign(e, c, args[1:])
		case "list":
			return runPolicyList(e, c, args[1:])
		}
	}
	fs := cli.FlagSet(c)
	var sf policySignFlags
	sf.register(fs)
	if _, err := commands.Parse(e, c, fs, args); err != nil {
		return err
	}
	return cli.Usagef("want a subcommand: sign or list")
}

type policySignFlags struct {
	common
	key     string
	pcrs    pcrList
	values  string
	comment string
	out     string
}

func (f *policySignFlags) register(fs *flag.FlagSet) {
	f.common.register(fs)
	fs.StringVar(&f.key, "key", "", "the policy signing key (the private key FILE of icn-agent policy-key create); required")
	fs.Var(&f.pcrs, "pcrs", "PCRs (SHA-256 bank) to sign, as the identities select them (default: those in --values FILE, else from config, else 0,7)")
	fs.StringVar(&f.values, "values", "current", "the PCR values to sign: current (read from --tpm) or a FILE of N=HEX lines")
	fs.StringVar(&f.comment, "comment", "", "what the values are, for example the firmware version")
	fs.StringVar(&f.out, "o", "", "write the signed policy to this new file instead of the store's policies directory")
}

func runPolicySign(e *cli.Env, c *cli.Command, args []string) error {
	var f policySignFlags
	fs := cli.FlagSet(c)
	f.register(fs)
	_, err := commands.ParseN(e, c, fs, args, 0, "policy sign takes no arguments besides its flags")
	if err != nil {
		return err
	}
	if f.key == "" {
		return cli.Usagef("--key FILE is required: the private key of icn-agent policy-key create")
	}
	if err := f.setup(e); err != nil {
		return err
	}
	priv, err := readPolicySigningKey(f.key)
	if err != nil {
		return err
	}
	var values []sealstore.PCRValue
	if f.values == "current" {
		pcrs := f.pcrs.or(f.cfg.Identity.TPM.PCRs)
		if pcrs == nil {
			pcrs = tpmseal.DefaultPCRs
		}
		ctx := context.Background()
		tpm, err := f.openTPM(ctx)
		if err != nil {
			return err
		}
		values, err = tpmseal.ReadPCRValues(ctx, tpm, pcrs)
		tpm.Close()
		if err != nil {
			return err
		}
	} else {
		if values, err = sealstore.ReadPCRValuesFile(f.values); err != nil {
			return err
		}
		if f.pcrs.set && !slices.Equal(f.pcrs.pcrs, sealstore.Policy{PCRs: values}.Indexes()) {
			return fmt.Errorf("%s gives PCRs %s, but --pcrs says %s: sign exactly the PCRs the identities select", f.values, joinInts(sealstore.Policy{PCRs: values}.Indexes()), joinInts(f.pcrs.pcrs))
		}
	}
	sp, err := sealstore.SignPolicy(priv, values, f.comment, time.Now())
	if err != nil {
		return err
	}
	var path string
	if f.out != "" {
		data, err := sp.Marshal()
		if err != nil {
			return err
		}
		if err := createFile(f.out, data, 0o644); err != nil {
			return err
		}
		path = f.out
	} else {
		store, err := sealstore.Open(f.store)
		if err != nil {
			return err
		}
		path, err = store.AddSignedPolicy(sp)
		if errors.Is(err, sealstore.ErrExists) {
			fmt.Fprintf(e.Stdout, "already signed: %s\n", store.PolicyDir()+"/"+sp.FileName())
			return nil
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(e.Stdout, "signed %s\nkey %s, PCRs %s, policy digest %x\n%s\n", path, sp.Key.ID(), joinInts(sp.Indexes()), sp.Digest, sealstore.FormatPCRValues(sp.PCRs, "\n"))
	return nil
}

func runPolicyList(e *cli.Env, c *cli.Command, args []string) error {
	var f common
	fs := cli.FlagSet(c)
	f.register(fs)
	_, err := commands.ParseN(e, c, fs, args, 0, "policy list takes no arguments")
	if err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	entries, err := store.SignedPolicies()
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		fmt.Fprintf(e.Stderr, "no signed policies in %s; sign one with: icn-agent policy sign --key FILE\n", store.PolicyDir())
		return nil
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tPCRS\tSIGNED\tDIGEST\tCOMMENT")
	for _, en := range entries {
		if en.Err != nil {
			fmt.Fprintf(tw, "-\t-\t-\t-\tunreadable: %v\n", en.Err)
			continue
		}
		p := en.Policy
		fmt.Fprintf(tw, "%s\t%s\t%s\t%x\t%s\n", p.Key.ID(), joinInts(p.Indexes()), p.Signed.Format(time.DateTime), p.Digest[:8], cmp.Or(p.Comment, "-"))
	}
	return tw.Flush()
}
