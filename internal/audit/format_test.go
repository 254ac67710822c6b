package audit

import (
	"testing"
	"time"
)

func TestRecordLine(t *testing.T) {
	uid := 1000
	at := time.Date(2026, 11, 30, 6, 0, 0, 0, time.Local)
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{Record{Seq: 1, Time: at, Event: "start"}, "     1 2026-11-30 06:00:00 start     "},
		{Record{Seq: 2, Time: at, Event: "sign", Name: "id", Key: "SHA256:k", Backend: "sealed", PeerUID: &uid, PeerPID: 42, PeerExe: "/usr/bin/ssh", Dest: "SHA256:h", Outcome: "signed"},
			"     2 2026-11-30 06:00:00 sign       id SHA256:k (sealed) uid 1000 pid 42 /usr/bin/ssh to SHA256:h: signed"},
		{Record{Seq: 3, Time: at, Event: "refuse", Name: "id", Key: "SHA256:k", Backend: "sealed", Outcome: "locked"},
			"     3 2026-11-30 06:00:00 refuse     id SHA256:k (sealed): locked"},
		{Record{Seq: 4, Time: at, Event: "checkpoint", Covers: 3}, "     4 2026-11-30 06:00:00 checkpoint covers record 3"},
	} {
		if got := tc.r.Line(); got != tc.want {
			t.Errorf("Line() = %q\nwant     %q", got, tc.want)
		}
	}
}
