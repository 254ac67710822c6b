package audit

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Line is r as one line for people (icn-agent audit show): sequence
// number, local time, event, then what the event is about. Signatures and
// refusals name the identity, key and backend, the peer's uid, pid and
// executable when known, the destination, and the outcome; checkpoints
// the record they cover. The hashes that chain the log are left out: the
// JSON form has them.
func (r Record) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6d %s %-10s", r.Seq, r.Time.Local().Format("2006-01-02 15:04:05"), r.Event)
	switch r.Event {
	case "sign", "refuse":
		fmt.Fprintf(&b, " %s %s (%s)", r.Name, r.Key, r.Backend)
		if r.PeerUID != nil {
			fmt.Fprintf(&b, " uid %d", *r.PeerUID)
		}
		if r.PeerPID != 0 {
			fmt.Fprintf(&b, " pid %d", r.PeerPID)
		}
		if r.PeerExe != "" {
			fmt.Fprintf(&b, " %s", r.PeerExe)
		}
		if r.Dest != "" {
			fmt.Fprintf(&b, " to %s", r.Dest)
		}
		fmt.Fprintf(&b, ": %s", r.Outcome)
	case "checkpoint":
		fmt.Fprintf(&b, " covers record %d", r.Covers)
	}
	return b.String()
}

// WriteText writes rep for people, as icn-agent audit verify prints it:
// how many records and checkpoints, the attestation key that signed
// them, and which records nothing the TPM signed vouches for.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ok: %d records, %d checkpoints signed by the TPM's attestation key %s\n", rep.Records, rep.Checkpoints, hex.EncodeToString(rep.AKName))
	switch {
	case rep.Checkpoints == 0:
		b.WriteString("no checkpoint: nothing the TPM signed vouches for these records\n")
	case rep.Unanchored > 0:
		fmt.Fprintf(&b, "the last %d records follow the last checkpoint: nothing the TPM signed vouches for them yet\n", rep.Unanchored)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Show writes the records of the log in dir from since on to w, oldest
// first, one a line: as JSON if asJSON, else as Record.Line. Like Read,
// it does not verify the chain.
func Show(w io.Writer, dir string, since time.Time, asJSON bool) error {
	bw := bufio.NewWriter(w)
	err := Read(dir, since, func(r Record) error {
		if !asJSON {
			_, err := fmt.Fprintln(bw, r.Line())
			return err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = bw.Write(append(b, '\n'))
		return err
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// ParseSince reads the start of a time range as people give it: a
// duration back from now ("24h") or an RFC 3339 time. An empty s is the
// zero time, which Read takes as the start of the log.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("audit: %q is neither a duration (24h) nor an RFC 3339 time", s)
	}
	return t, nil
}
