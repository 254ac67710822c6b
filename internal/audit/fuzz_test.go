package audit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzRecordLine reads arbitrary log lines as Verify and Read do. Whatever
// decodes as a record must be written back byte for byte as json.Marshal
// writes it (the reflection-free encoder's promise), and decode again to
// the same record.
func FuzzRecordLine(f *testing.F) {
	uid := 1000
	for _, r := range []Record{
		{Seq: 1, Time: time.Date(2026, 11, 30, 6, 0, 0, 123, time.UTC), Event: "start", Prev: "00"},
		{Seq: 2, Time: time.Date(2026, 11, 30, 6, 0, 1, 0, time.FixedZone("x", 3600)), Event: "sign", Key: "SHA256:abc", Name: "work \"quoted\" <tag>",
			Backend: "sealed", PeerUID: &uid, PeerPID: 42, PeerExe: "/usr/bin/ssh\u2028", Dest: "SHA256:def", DataSHA256: "ff", Outcome: "signed", Prev: "aa"},
		{Seq: 3, Time: time.Unix(0, 0).UTC(), Event: "checkpoint", Covers: 2, Head: "bb", Prev: "cc"},
	} {
		line, err := json.Marshal(&r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(line)
	}
	f.Add([]byte(`{"seq":1,"time":"2026-11-30T06:00:00Z","event":"sign","name":"\ud800","prev":""}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var r Record
		if err := json.Unmarshal(line, &r); err != nil || r.Stamp != nil {
			return
		}
		want, err := json.Marshal(&r)
		if err != nil {
			return // a time json.Marshal refuses (a year past 9999)
		}
		got, err := appendRecord(nil, &r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("appendRecord wrote\n%s\njson.Marshal\n%s\n(%v)", got, want, err)
		}
		var again Record
		if err := json.Unmarshal(got, &again); err != nil {
			t.Fatalf("the written line does not decode: %v", err)
		}
		if line2, _ := json.Marshal(&again); !bytes.Equal(line2, want) {
			t.Fatalf("round trip changed the record:\n%s\n%s", want, line2)
		}
	})
}
