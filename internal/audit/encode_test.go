package audit

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// appendRecord writes exactly what json.Marshal writes, for every field
// and for strings full of what needs escaping.
func TestAppendRecordIsJSONMarshal(t *testing.T) {
	nasty := []string{"", "plain", "quote\" back\\slash", "ctl\x00\x01\x1f\n\r\t\b\f", "<html>&amp;", "line\u2028sep\u2029",
		"bad\xffutf8\xc3", "ünïcödé ✓ 𝄞", "/usr/bin/ssh -A host"}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return nasty[rng.IntN(len(nasty))] }
	for i := range 2000 {
		uid := rng.IntN(70000) - 5
		r := Record{
			Seq: rng.Uint64(), Time: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC(), Event: pick(),
			Key: pick(), Name: pick(), Backend: pick(), PeerPID: rng.IntN(3) * rng.IntN(1<<22), PeerExe: pick(),
			Dest: pick(), DataSHA256: pick(), Outcome: pick(), Covers: uint64(rng.IntN(2)) * rng.Uint64(), Head: pick(), Prev: pick(),
		}
		if i%2 == 0 {
			r.PeerUID = &uid
		}
		if i%7 == 0 {
			r.Time = time.Date(2026, 11, 30, 1, 2, 3, 0, time.UTC)
		}
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendRecord(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, got, want)
		}
	}
}
