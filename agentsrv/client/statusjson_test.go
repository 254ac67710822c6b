package client_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/icn/icn-agent/agentsrv/client"
)

// The JSON form is a contract with scripts: this is it, byte for byte.
func TestStatusJSON(t *testing.T) {
	used := time.Date(2026, 11, 30, 6, 0, 0, 0, time.FixedZone("x", 3600))
	st := &client.Status{
		SoftwareKeys: 1,
		Lockout:      &client.LockoutStatus{Counter: 1, Max: 32},
		Identities: []client.IdentityStatus{
			{Name: "a", Fingerprint: "SHA256:a", Unsealed: true, Expiry: used.Add(time.Hour), UnsealCount: 2, LastUsed: used, LastPeer: "ssh (pid 1)", LastDest: "host"},
			{Name: "b", Fingerprint: "SHA256:b", Hidden: true, PCRMismatch: []int{7}, LastError: "no"},
		},
	}
	got, err := json.Marshal(st.JSON(json.RawMessage(`{"signs":3}`)))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"locked":false,"software_keys":1,"identities":[` +
		`{"name":"a","fingerprint":"SHA256:a","unsealed":true,"expiry":"2026-11-30T06:00:00Z","unseal_count":2,"hidden":false,"last_used":"2026-11-30T05:00:00Z","last_peer":"ssh (pid 1)","last_dest":"host"},` +
		`{"name":"b","fingerprint":"SHA256:b","unsealed":false,"unseal_count":0,"hidden":true,"pcr_mismatch":[7],"last_error":"no"}],` +
		`"lockout":{"counter":1,"max":32},"metrics":{"signs":3}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	locked, _ := json.Marshal((&client.Status{Locked: true}).JSON(nil))
	if string(locked) != `{"locked":true,"software_keys":0,"identities":[]}` {
		t.Errorf("locked: %s", locked)
	}
}
