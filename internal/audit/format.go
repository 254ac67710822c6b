package audit

import (
	"fmt"
	"strings"
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
