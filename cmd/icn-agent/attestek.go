package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/safefile"
)

func init() {
	register(&command{
		name:    "attest",
		args:    "NAME --ek-roots FILE [-a SOCKET] [--json]",
		summary: "Check a running agent's identity from scratch: its TPM's EK certificate against trusted roots, its attestation key by credential activation, then a fresh quote. Exits 0 only when all holds.",
		run:     runAttest,
	})
}

// maxRootsFile bounds a bundle of trusted certificates.
const maxRootsFile = 1 << 20

// readTrust reads a PEM bundle of trusted certificates (attest.ParseEKTrust).
func readTrust(path string) (attest.EKTrust, error) {
	data, err := safefile.Read(path, maxRootsFile)
	if err != nil {
		return attest.EKTrust{}, err
	}
	trust, err := attest.ParseEKTrust(data)
	if errors.Is(err, attest.ErrNoCertificate) {
		return trust, fmt.Errorf("%s holds no PEM certificate", path)
	}
	if err != nil {
		return trust, fmt.Errorf("%s: %w", path, err)
	}
	return trust, nil
}

// attestJSON is the --json output of icn-agent attest.
type attestJSON struct {
	OK                  bool     `json:"ok"`
	Error               string   `json:"error,omitempty"`
	Identity            string   `json:"identity,omitempty"`
	EKSubject           string   `json:"ek_subject,omitempty"`
	EKIssuer            string   `json:"ek_issuer,omitempty"`
	AKName              string   `json:"ak_name,omitempty"`
	Certified           bool     `json:"certified"`
	Policy              string   `json:"policy,omitempty"`
	SealedPolicyMatches bool     `json:"sealed_policy_matches"`
	PCRs                []string `json:"pcrs,omitempty"`
}

// errAttestFailed is returned after the verdict is printed, for exit 1.
var errAttestFailed = errors.New("attestation failed")

func runAttest(e *env, args []string) error {
	c := lookup("attest")
	fs := newFlagSet(c)
	socket := fs.String("a", "", "agent socket (default $SSH_AUTH_SOCK; a forwarded agent works)")
	roots := fs.String("ek-roots", "", "PEM bundle of the trusted TPM manufacturer roots and intermediates")
	asJSON := fs.Bool("json", false, "print the verdict as JSON")
	pos, err := parseArgs(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	if *roots == "" {
		return usagef("--ek-roots is required: the roots that issued your TPM's endorsement key certificate")
	}
	trust, err := readTrust(*roots)
	if err != nil {
		return err
	}
	cl, err := dialAgent(e, *socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	key, err := servedIdentity(cl, pos[0])
	if err != nil {
		return err
	}
	v, err := attest.AttestAgent(cl.Agent(), key, trust, attest.VerifyOptions{})
	ok := err == nil && v.Result.Certified && v.Result.SealedPolicyMatches
	if *asJSON {
		j := attestJSON{OK: ok, Identity: ssh.FingerprintSHA256(key)}
		if err != nil {
			j.Error = err.Error()
		} else {
			r := v.Result
			j.EKSubject, j.EKIssuer = v.EK.Certificate.Subject.String(), v.EK.Certificate.Issuer.String()
			j.AKName = hex.EncodeToString(r.AKName)
			j.Certified, j.SealedPolicyMatches = r.Certified, r.SealedPolicyMatches
			j.Policy = r.SealedPolicyKind.Describe(r.SealedPIN)
			for _, i := range r.SealedPCRs {
				j.PCRs = append(j.PCRs, fmt.Sprintf("%d=%s", i, hex.EncodeToString(r.PCRs[i])))
			}
		}
		out, _ := json.MarshalIndent(j, "", "  ")
		e.stdout.Write(append(out, '\n'))
	} else if err == nil {
		fmt.Fprintf(e.stdout, "ok: the EK certificate of %q chains to a trusted root (issuer %q)\n", v.EK.Certificate.Subject, v.EK.Certificate.Issuer)
		fmt.Fprintf(e.stdout, "ok: the attestation key %s lives in that TPM (credential activated)\n", hex.EncodeToString(v.Result.AKName))
		printResult(e, v.Result)
	}
	switch {
	case err != nil:
		return fmt.Errorf("attestation failed: %w", err)
	case !ok:
		return errAttestFailed
	}
	return nil
}
