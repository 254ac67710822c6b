package sealstore

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"text/tabwriter"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/didkey"
	"github.com/icn/icn-agent/internal/tpmpolicy"
)

// Listing describes a stored identity as icn-agent list shows it. Its
// JSON form is the output of icn-agent list --json, a contract with
// scripts: fields may be added, never renamed or removed.
type Listing struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint,omitempty"`
	PCRs        []int  `json:"pcrs,omitempty"`
	DIDKey      string `json:"did_key,omitempty"`
	Comment     string `json:"comment,omitempty"`
	// Policy is "pcr" (bound to the PCR values at seal time) or "signed"
	// (bound to PCR values approved by a policy key).
	Policy string `json:"policy,omitempty"`
	// PIN says unsealing also needs the identity's PIN.
	PIN bool `json:"pin,omitempty"`
	// Status is one of the Status constants (StatusUsable, ...).
	Status string `json:"status"`
	// MismatchedPCRs lists the PCRs that changed since sealing.
	MismatchedPCRs []int  `json:"mismatched_pcrs,omitempty"`
	Error          string `json:"error,omitempty"`
	Path           string `json:"path"`
}

// Describe returns what the store says about en: for an unreadable entry,
// StatusUnreadable and its error; for a blob, its key, did:key, comment
// and policy, with the status left for SetStatus.
func Describe(en Entry) Listing {
	l := Listing{Name: en.Name, Path: en.Path}
	if en.Err != nil {
		l.Status, l.Error = StatusUnreadable, en.Err.Error()
		return l
	}
	b := en.Blob
	l.Fingerprint = ssh.FingerprintSHA256(b.PublicKey)
	l.PCRs = b.Policy.Indexes()
	l.Comment = b.Comment
	l.Policy, l.PIN = "pcr", b.Policy.PIN
	if b.Policy.Kind == PolicyAuthorizedPCR {
		l.Policy = "signed"
	}
	if cpk, ok := b.PublicKey.(ssh.CryptoPublicKey); ok {
		if pub, ok := cpk.CryptoPublicKey().(ed25519.PublicKey); ok {
			l.DIDKey = didkey.Encode(pub)
		}
	}
	return l
}

// SetStatus records st (from CheckStatus) in l. The error of a PCR
// mismatch is left out: MismatchedPCRs says it.
func (l *Listing) SetStatus(st BlobStatus) {
	l.Status, l.MismatchedPCRs = st.Status, st.MismatchedPCRs
	if st.Err != nil && st.Status != StatusPCRMismatch {
		l.Error = st.Err.Error()
	}
}

// WriteListings writes ls for people, as icn-agent list prints it: a
// table of names, fingerprints, PCRs (with "signed" for a signed policy
// and "+PIN"), did:keys and statuses, with the PCRs that changed or the
// error where a status has them, and "-" for what is not known.
func WriteListings(w io.Writer, ls []Listing) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFINGERPRINT\tPCRS\tDID\tSTATUS")
	for _, l := range ls {
		status := l.Status
		switch l.Status {
		case StatusPCRMismatch:
			status = "PCR mismatch: " + tpmpolicy.FormatList(l.MismatchedPCRs)
		case StatusUnreadable, StatusUnknown, StatusOtherTPM, StatusNoSignedPolicy:
			status = l.Status + ": " + l.Error
		}
		pcrs := dash(tpmpolicy.FormatList(l.PCRs))
		if l.Policy == "signed" {
			pcrs += " signed"
		}
		if l.PIN {
			pcrs += " +PIN"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Name, dash(l.Fingerprint), pcrs, dash(l.DIDKey), status)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
