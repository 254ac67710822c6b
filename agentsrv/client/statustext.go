package client

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Identity returns the status of the identity name, or nil if the agent
// reports none of that name.
func (st *Status) Identity(name string) *IdentityStatus {
	for i := range st.Identities {
		if st.Identities[i].Name == name {
			return &st.Identities[i]
		}
	}
	return nil
}

// WriteText writes st for people, as icn-agent status prints it: a table
// of the identities with their state, the time left before their seed is
// dropped and why they cannot be used, then their last signatures, the
// software keys and the TPM's dictionary-attack counter. Durations are
// counted from now. A locked agent reports nothing to write: the caller
// says it is locked.
func (st *Status) WriteText(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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
			expires = is.Expiry.Sub(now).Round(time.Second).String()
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
	var b strings.Builder
	for _, is := range st.Identities {
		if is.LastUsed.IsZero() {
			continue
		}
		fmt.Fprintf(&b, "%s last signed %s ago for %s", is.Name, now.Sub(is.LastUsed).Round(time.Second), is.LastPeer)
		if is.LastDest != "" {
			b.WriteString(" to " + is.LastDest)
		}
		b.WriteString("\n")
	}
	if st.SoftwareKeys > 0 {
		fmt.Fprintf(&b, "%d software key(s) added with ssh-add\n", st.SoftwareKeys)
	}
	if l := st.Lockout; l != nil {
		fmt.Fprintf(&b, "TPM dictionary-attack counter: %d of %d (wrong PINs; at %d every PIN identity is locked out)\n", l.Counter, l.Max, l.Max)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// joinInts writes PCR indexes as people write them: "0,7".
func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
