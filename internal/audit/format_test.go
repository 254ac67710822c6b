package audit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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

func TestReportWriteText(t *testing.T) {
	for _, tc := range []struct {
		rep  Report
		want string
	}{
		{Report{Records: 5, Checkpoints: 1, AKName: []byte{0, 0xb}}, "ok: 5 records, 1 checkpoints signed by the TPM's attestation key 000b\n"},
		{Report{Records: 5, Checkpoints: 1, Unanchored: 2, AKName: []byte{1}}, "ok: 5 records, 1 checkpoints signed by the TPM's attestation key 01\n" +
			"the last 2 records follow the last checkpoint: nothing the TPM signed vouches for them yet\n"},
		{Report{Records: 2}, "ok: 2 records, 0 checkpoints signed by the TPM's attestation key \n" +
			"no checkpoint: nothing the TPM signed vouches for these records\n"},
	} {
		var b strings.Builder
		if err := tc.rep.WriteText(&b); err != nil || b.String() != tc.want {
			t.Errorf("WriteText = %q, %v\nwant %q", b.String(), err, tc.want)
		}
	}
}

func TestShow(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	var log []byte
	for _, r := range []Record{{Seq: 1, Time: at, Event: "start"}, {Seq: 2, Time: at.Add(time.Hour), Event: "checkpoint", Covers: 1}} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		log = append(append(log, b...), '\n')
	}
	if err := os.WriteFile(filepath.Join(dir, CurrentFile), log, 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Show(&b, dir, time.Time{}, true); err != nil || b.String() != string(log) {
		t.Errorf("Show as JSON = %q, %v\nwant %q", b.String(), err, log)
	}
	b.Reset()
	last := Record{Seq: 2, Time: at.Add(time.Hour), Event: "checkpoint", Covers: 1}
	if err := Show(&b, dir, at.Add(time.Minute), false); err != nil || b.String() != last.Line()+"\n" {
		t.Errorf("Show since = %q, %v", b.String(), err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"24h":                  now.Add(-24 * time.Hour),
		"2026-11-01T00:00:00Z": time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	} {
		if got, err := ParseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseSince("yesterday", now); err == nil || !strings.Contains(err.Error(), `"yesterday"`) {
		t.Errorf("ParseSince(yesterday) = %v", err)
	}
}
