package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/prompt"
	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
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
	register(&command{
		name:    "policy-key",
		args:    "create FILE",
		summary: "Create an ECDSA P-256 policy signing key: FILE holds the private key (keep it offline), FILE.pub the public key for keygen --signed-policy.",
		run:     runPolicyKey,
	})
	register(&command{
		name:    "policy",
		args:    "sign --key FILE [--pcrs 0,7] [--values current|FILE] [--comment TEXT] [-o OUT] | list",
		summary: "Sign PCR values under which identities sealed with --signed-policy may unseal (kept in STORE/policies), or list the signed policies.",
		run:     runPolicy,
	})
}

func runPolicyKey(e *env, args []string) error {
	c := lookup("policy-key")
	fs := newFlagSet(c)
	pos, err := parseFlags(e, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "create" {
		return usagef("want create FILE")
	}
	file := pos[1]
	pubFile := file + ".pub"
	for _, p := range []string{file, pubFile} {
		if err := checkNewFile(p, "key file"); err != nil {
			return err
		}
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate policy key: %w", err)
	}
	key, err := sealstore.NewPolicyKey(&priv.PublicKey)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encode policy key: %w", err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	defer secmem.Wipe(privPEM)
	secmem.Wipe(der)
	if err := createFile(file, privPEM, 0o600); err != nil {
		return err
	}
	if err := createFile(pubFile, key.PEM(), 0o644); err != nil {
		os.Remove(file)
		return fmt.Errorf("%w; nothing was kept", err)
	}
	fmt.Fprintf(e.stdout, "policy key %s\nprivate key: %s (keep it offline: whoever holds it decides which PCR values unseal)\npublic key:  %s (for icn-agent keygen --signed-policy)\n", key.ID(), file, pubFile)
	return nil
}

// createFile creates path with data and mode, failing if it exists, and
// syncs it. A partial file is removed.
func createFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists; icn-agent never overwrites one: pick a new file name", path)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readPolicyKey reads a policy key's public half (FILE.pub of policy-key
// create).
func readPolicyKey(path string) (*sealstore.PolicyKey, error) {
	data, err := safefile.Read(path, maxKeyFile)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		secmem.Wipe(data)
		return nil, fmt.Errorf("%s is a private key; pass its public half (%s.pub, from icn-agent policy-key create), and keep the private key offline", path, path)
	}
	key, err := sealstore.ParsePolicyKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (want the FILE.pub that icn-agent policy-key create wrote)", path, err)
	}
	return key, nil
}

// readPolicySigningKey reads a policy key's private half: PKCS#8 or SEC 1
// PEM, ECDSA P-256.
func readPolicySigningKey(path string) (*ecdsa.PrivateKey, error) {
	buf, data, err := prompt.ReadFile(path, maxKeyFile)
	if err != nil {
		return nil, err
	}
	defer buf.Destroy()
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s is not a PEM private key (want the FILE of icn-agent policy-key create)", path)
	}
	defer secmem.Wipe(block.Bytes)
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PUBLIC KEY":
		return nil, fmt.Errorf("%s is a public key; signing needs the private key (the FILE of icn-agent policy-key create, without .pub)", path)
	default:
		return nil, fmt.Errorf("%s holds a PEM %q block, not a policy signing key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s is not an ECDSA P-256 key; create a policy key with icn-agent policy-key create", path)
	}
	return ec, nil
}

func runPolicy(e *env, args []string) error {
	c := lookup("policy")
	if len(args) > 0 {
		switch args[0] {
		case "sign":
			return runPolicySign(e, c, args[1:])
		case "list":
			return runPolicyList(e, c, args[1:])
		}
	}
	fs := newFlagSet(c)
	var sf policySignFlags
	sf.register(fs)
	if _, err := parseFlags(e, c, fs, args); err != nil {
		return err
	}
	return usagef("want a subcommand: sign or list")
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

func runPolicySign(e *env, c *command, args []string) error {
	var f policySignFlags
	fs := newFlagSet(c)
	f.register(fs)
	pos, err := parseFlags(e, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("policy sign takes no arguments besides its flags")
	}
	if f.key == "" {
		return usagef("--key FILE is required: the private key of icn-agent policy-key create")
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
		if values, err = currentPCRValues(context.Background(), &f.common, pcrs); err != nil {
			return err
		}
	} else {
		if values, err = readPCRValuesFile(f.values); err != nil {
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
			fmt.Fprintf(e.stdout, "already signed: %s\n", store.PolicyDir()+"/"+sp.FileName())
			return nil
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "signed %s\nkey %s, PCRs %s, policy digest %x\n%s\n", path, sp.Key.ID(), joinInts(sp.Indexes()), sp.Digest, sealstore.FormatPCRValues(sp.PCRs, "\n"))
	return nil
}

// currentPCRValues reads the SHA-256 values of pcrs from the TPM.
func currentPCRValues(ctx context.Context, f *common, pcrs []int) ([]sealstore.PCRValue, error) {
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return nil, err
	}
	defer tpm.Close()
	var out []sealstore.PCRValue
	err = tpm.Run(ctx, func(t transport.TPM) error {
		values, _, err := tpmdev.ReadPCRs(t, tpm2.TPMAlgSHA256, pcrs)
		if err != nil {
			return err
		}
		for i, idx := range pcrs {
			out = append(out, sealstore.PCRValue{Index: idx, Value: values[i]})
		}
		return nil
	})
	return out, err
}

// readPCRValuesFile reads "N=HEX" lines (SHA-256 values of PCR N); blank
// lines and lines starting with # are ignored. tpm2_pcrread's "N: 0xHEX"
// lines are accepted too.
func readPCRValuesFile(path string) ([]sealstore.PCRValue, error) {
	data, err := safefile.Read(path, 64<<10)
	if err != nil {
		return nil, err
	}
	var out []sealstore.PCRValue
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasSuffix(line, ":") {
			continue // blank, comment, or tpm2_pcrread's "sha256:"
		}
		idxText, hexText, ok := strings.Cut(line, "=")
		if !ok {
			idxText, hexText, ok = strings.Cut(line, ":")
		}
		idx, err := strconv.Atoi(strings.TrimSpace(idxText))
		if !ok || err != nil || idx < 0 || idx >= tpmdev.NumPCRs {
			return nil, fmt.Errorf("%s:%d: want N=HEX with N a PCR 0-%d and HEX its 64-digit SHA-256 value, got %q", path, n, tpmdev.NumPCRs-1, truncateText(line, 80))
		}
		hexText = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(hexText), "0x"), "0X")
		v, err := hex.DecodeString(hexText)
		if err != nil || len(v) != 32 {
			return nil, fmt.Errorf("%s:%d: PCR %d: want 64 hex digits (a SHA-256 value)", path, n, idx)
		}
		if slices.ContainsFunc(out, func(p sealstore.PCRValue) bool { return p.Index == idx }) {
			return nil, fmt.Errorf("%s:%d: PCR %d given twice", path, n, idx)
		}
		out = append(out, sealstore.PCRValue{Index: idx, Value: v})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no PCR values: want N=HEX lines, such as those an unseal error prints", path)
	}
	slices.SortFunc(out, func(a, b sealstore.PCRValue) int { return a.Index - b.Index })
	return out, nil
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func runPolicyList(e *env, c *command, args []string) error {
	var f common
	fs := newFlagSet(c)
	f.register(fs)
	pos, err := parseFlags(e, c, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("policy list takes no arguments")
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
		fmt.Fprintf(e.stderr, "no signed policies in %s; sign one with: icn-agent policy sign --key FILE\n", store.PolicyDir())
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tPCRS\tSIGNED\tDIGEST\tCOMMENT")
	for _, en := range entries {
		if en.Err != nil {
			fmt.Fprintf(tw, "-\t-\t-\t-\tunreadable: %v\n", en.Err)
			continue
		}
		p := en.Policy
		fmt.Fprintf(tw, "%s\t%s\t%s\t%x\t%s\n", p.Key.ID(), joinInts(p.Indexes()), p.Signed.Format(time.DateTime), p.Digest[:8], dash(p.Comment))
	}
	return tw.Flush()
}
