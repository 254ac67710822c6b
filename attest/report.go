package attest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"slices"

	"golang.org/x/crypto/ssh"
)

// WriteText writes r for people, as icn-agent verify prints it: the
// identity's fingerprint, the AK's name and whether it was pinned, the
// quoted PCR values in index order, and what the evidence says of the
// sealed key. unpinnedNote, if not empty, follows "NOT pinned" on the AK
// line: the caller's advice on pinning the AK.
func (r *Result) WriteText(w io.Writer, unpinnedNote string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "ok: evidence verifies\n")
	fmt.Fprintf(&b, "identity:   %s\n", ssh.FingerprintSHA256(r.Identity))
	pin := "NOT pinned"
	switch {
	case r.AKPinned:
		pin = "pinned"
	case unpinnedNote != "":
		pin += ": " + unpinnedNote
	}
	fmt.Fprintf(&b, "AK:         %s (%s)\n", hex.EncodeToString(r.AKName), pin)
	idx := make([]int, 0, len(r.PCRs))
	for i := range r.PCRs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		fmt.Fprintf(&b, "PCR %-2d      %s\n", i, hex.EncodeToString(r.PCRs[i]))
	}
	switch {
	case !r.Certified:
		fmt.Fprintf(&b, "sealed key: not certified\n")
	case r.SealedPolicyMatches:
		fmt.Fprintf(&b, "sealed key: certified; its %s matches the quoted values (it unseals in this state)\n", r.SealedPolicyKind.Describe(r.SealedPIN))
	default:
		fmt.Fprintf(&b, "sealed key: certified; its %s does NOT match the quoted values (it no longer unseals)\n", r.SealedPolicyKind.Describe(r.SealedPIN))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// OK reports whether the verdict is all a verifier wants: the sealed key
// is certified and its policy matches the quoted values, so the identity
// unseals on that TPM now.
func (v *AgentVerdict) OK() bool { return v.Result.Certified && v.Result.SealedPolicyMatches }

// WriteText writes v for people, as icn-agent attest prints it: what the
// EK certificate and the credential activation proved, then the evidence
// (Result.WriteText).
func (v *AgentVerdict) WriteText(w io.Writer) error {
	cert := v.EK.Certificate
	if _, err := fmt.Fprintf(w, "ok: the EK certificate of %q chains to a trusted root (issuer %q)\n"+
		"ok: the attestation key %s lives in that TPM (credential activated)\n",
		cert.Subject, cert.Issuer, hex.EncodeToString(v.Result.AKName)); err != nil {
		return err
	}
	return v.Result.WriteText(w, "")
}

// AgentVerdictJSON is the JSON form of AttestAgent's outcome, for scripts
// (icn-agent attest --json prints it). Its field names are a contract:
// fields may be added, never renamed or removed.
type AgentVerdictJSON struct {
	// OK is AgentVerdict.OK, false on any error.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Identity is the SHA256 fingerprint of the identity key asked about.
	Identity            string `json:"identity,omitempty"`
	EKSubject           string `json:"ek_subject,omitempty"`
	EKIssuer            string `json:"ek_issuer,omitempty"`
	AKName              string `json:"ak_name,omitempty"`
	Certified           bool   `json:"certified"`
	Policy              string `json:"policy,omitempty"`
	SealedPolicyMatches bool   `json:"sealed_policy_matches"`
	// PCRs are the sealed PCRs' quoted values, "N=HEX" in index order.
	PCRs []string `json:"pcrs,omitempty"`
}

// VerdictJSON returns the JSON form of what AttestAgent returned, v and
// err, for the identity key: on an error, only the error and the key.
func VerdictJSON(key ssh.PublicKey, v *AgentVerdict, err error) AgentVerdictJSON {
	j := AgentVerdictJSON{Identity: ssh.FingerprintSHA256(key)}
	if err != nil {
		j.Error = err.Error()
		return j
	}
	r := v.Result
	j.OK = v.OK()
	j.EKSubject, j.EKIssuer = v.EK.Certificate.Subject.String(), v.EK.Certificate.Issuer.String()
	j.AKName = hex.EncodeToString(r.AKName)
	j.Certified, j.SealedPolicyMatches = r.Certified, r.SealedPolicyMatches
	j.Policy = r.SealedPolicyKind.Describe(r.SealedPIN)
	for _, i := range r.SealedPCRs {
		j.PCRs = append(j.PCRs, fmt.Sprintf("%d=%s", i, hex.EncodeToString(r.PCRs[i])))
	}
	return j
}
