package attest

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParseSSH: ParseSSH never panics, and whatever it accepts re-encodes
// to exactly the input (the encoding is canonical) and through JSON to the
// same evidence.
func FuzzParseSSH(f *testing.F) {
	g := loadGolden(f)
	f.Add(g.e.MarshalSSH())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseSSH(b)
		if err != nil {
			if e != nil {
				t.Fatal("ParseSSH returned evidence with an error")
			}
			return
		}
		if !bytes.Equal(e.MarshalSSH(), b) {
			t.Fatalf("ParseSSH accepted a non-canonical encoding")
		}
		js, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("MarshalJSON of parsed evidence: %v", err)
		}
		var back Evidence
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatalf("UnmarshalJSON of MarshalJSON: %v", err)
		}
		if !bytes.Equal(back.MarshalSSH(), b) {
			t.Fatalf("JSON round trip changed the evidence")
		}
	})
}

// FuzzVerify: mutated evidence never panics Verify and never verifies
// unless it is the original. SealedPCRs is an unauthenticated hint (see
// Evidence): a mutation there may verify, but then never with
// SealedPolicyMatches. (ECDSA signatures are malleable, (r, s) and
// (r, n-s) both verify; byte mutations do not find that in practice.)
func FuzzVerify(f *testing.F) {
	g := loadGolden(f)
	valid := g.e.MarshalSSH()
	f.Add(valid)
	opts := g.opts()
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseSSH(b)
		if err != nil {
			return
		}
		res, err := Verify(e, opts)
		if err != nil {
			if res != nil {
				t.Fatal("Verify returned a result with an error")
			}
			return
		}
		if bytes.Equal(b, valid) {
			return
		}
		e.SealedPCRs = g.e.SealedPCRs
		if res.SealedPolicyMatches || !bytes.Equal(e.MarshalSSH(), valid) {
			t.Fatalf("mutated evidence verifies: %+v", res)
		}
	})
}

// FuzzUnmarshalJSON: the JSON decoder never panics, and what it accepts
// survives the SSH encoding unchanged.
func FuzzUnmarshalJSON(f *testing.F) {
	g := loadGolden(f)
	f.Add(g.json)
	f.Add([]byte(`{"format":"icn-agent-evidence-v1","version":1,"bank":"0x0004","pcrs":[{"index":0,"value":"00"}],"attest":"AA==","signature":"AA==","ak_public":"AA==","identity_key":"AA==","possession":"AA=="}`))
	f.Add([]byte(`{"format":"icn-agent-evidence-v2"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Evidence
		if err := json.Unmarshal(b, &e); err != nil {
			return
		}
		back, err := ParseSSH(e.MarshalSSH())
		if err != nil {
			t.Fatalf("evidence from JSON does not survive SSH: %v", err)
		}
		if !bytes.Equal(back.MarshalSSH(), e.MarshalSSH()) {
			t.Fatal("SSH round trip of JSON evidence changed it")
		}
		_, _ = Verify(&e, g.opts())
	})
}
