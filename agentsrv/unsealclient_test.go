package agentsrv

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/icn/icn-agent/agentsrv/client"
)

// RequestUnseal explains each failure from the agent's status.
func TestRequestUnseal(t *testing.T) {
	f := newFakeUnsealer()
	alice := newTestKey(t, f, "alice", "alice@laptop")
	ts := startServer(t, Config{Unsealer: f, AutoLockTimeout: time.Hour}, Identity{Blob: alice.blob})
	cl, err := client.Dial(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	if err := RequestUnseal(cl, "alice", UnsealOptions{Confirm: true}); err != nil {
		t.Fatal(err)
	}
	if is := ts.identityStatus(t, "alice"); !is.Unsealed {
		t.Fatalf("alice not unsealed: %+v", is)
	}
	if err := RequestUnseal(cl, "bob", UnsealOptions{Confirm: true}); !errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), `"bob"`) {
		t.Errorf("unknown identity: %v, want ErrNotFound naming it", err)
	}
	ts.DropAll()
	f.setFail(errors.New("the TPM is on fire"))
	if err := RequestUnseal(cl, "alice", UnsealOptions{Confirm: true}); err == nil || !strings.Contains(err.Error(), "the TPM is on fire") {
		t.Errorf("failed unseal: %v, want the agent's last error", err)
	}
	f.setFail(nil)
	if err := ts.dial(t).Lock([]byte("pass")); err != nil {
		t.Fatal(err)
	}
	if err := RequestUnseal(cl, "alice", UnsealOptions{Confirm: true}); !errors.Is(err, client.ErrLocked) {
		t.Errorf("locked agent: %v, want ErrLocked", err)
	}
}
