package agentsrv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/sealstore"
)

// askpassScript writes an askpass program that records its prompt and
// SSH_ASKPASS_PROMPT in log and exits with status.
func askpassScript(t *testing.T, status int) (prog, log string) {
	t.Helper()
	dir := t.TempDir()
	prog, log = filepath.Join(dir, "askpass"), filepath.Join(dir, "prompts")
	script := "#!/bin/sh\nprintf '%s|%s\\n' \"$SSH_ASKPASS_PROMPT\" \"$1\" >> " + log + "\nexit " + string(rune('0'+status)) + "\n"
	if err := os.WriteFile(prog, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return prog, log
}

func TestConfirmSealed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		noProg bool
		signs  bool
	}{
		{name: "yes", status: 0, signs: true},
		{name: "no", status: 1},
		{name: "no askpass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeUnsealer()
			k := newTestKey(t, f, "guarded", "")
			free := newTestKey(t, f, "free", "")
			prog, log := askpassScript(t, tc.status)
			if tc.name == "no askpass" {
				prog = ""
			}
			aud := newRecorder()
			ts := startServer(t, Config{Unsealer: f, AskPass: prog, Audit: aud},
				Identity{Blob: k.blob, Confirm: true}, Identity{Blob: free.blob})
			a := ts.dial(t)
			_, err := a.Sign(k.pub, []byte("data"))
			if (err == nil) != tc.signs {
				t.Fatalf("sign: %v, want signed %v", err, tc.signs)
			}
			ev := <-aud.ch
			if !tc.signs && !errors.Is(ev.Err, ErrNotConfirmed) {
				t.Errorf("refusal %v, want ErrNotConfirmed", ev.Err)
			}
			if !tc.signs && f.calls.Load() != 0 {
				t.Error("unsealed before the use was confirmed")
			}
			// The refusal is of that signature only.
			mustSign(t, a, free.pub, []byte("data"))
			if prog == "" {
				return
			}
			prompts, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			p := string(prompts)
			for _, want := range []string{"confirm|", "guarded", ssh.FingerprintSHA256(k.pub), "pid " + itoa(os.Getpid())} {
				if !strings.Contains(p, want) {
					t.Errorf("prompt %q lacks %q", p, want)
				}
			}
			if strings.Count(p, "confirm|") != 1 {
				t.Errorf("asked %d times, want once: %q", strings.Count(p, "confirm|"), p)
			}
		})
	}
}

// TestConfirmByAdd: an unseal request with the confirm flag makes each
// use ask; one without clears it.
func TestConfirmByAdd(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	prog, _ := askpassScript(t, 1)
	ts := startServer(t, Config{Unsealer: f, AskPass: prog}, Identity{Blob: k.blob})
	a := ts.dial(t)
	req, err := MarshalUnsealRequest("id", UnsealOptions{Confirm: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Extension(ExtUnseal, req); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sign(k.pub, []byte("x")); err == nil {
		t.Fatal("signed without confirmation after add -c")
	}
	req, _ = MarshalUnsealRequest("id", UnsealOptions{})
	if _, err := a.Extension(ExtUnseal, req); err != nil {
		t.Fatal(err)
	}
	mustSign(t, a, k.pub, []byte("x"))
}

// pinFake is a PINUnsealer that accepts one PIN.
type pinFake struct {
	*fakeUnsealer
	want string
}

func (p *pinFake) UnsealWithPIN(ctx context.Context, b *sealstore.Blob, pin, dst []byte) error {
	if string(pin) != p.want {
		return errors.New("fake: wrong PIN")
	}
	return p.fakeUnsealer.Unseal(ctx, b, dst)
}

func TestUnsealWithPIN(t *testing.T) {
	f := newFakeUnsealer()
	k := newTestKey(t, f, "id", "")
	u := &pinFake{fakeUnsealer: f, want: "1234"}
	ts := startServer(t, Config{Unsealer: u}, Identity{Blob: k.blob})
	a := ts.dial(t)
	wrong, _ := MarshalUnsealRequest("id", UnsealOptions{PIN: []byte("0000")})
	if _, err := a.Extension(ExtUnseal, wrong); err == nil {
		t.Fatal("unsealed with a wrong PIN")
	}
	if st := ts.identityStatus(t, "id"); !strings.Contains(st.LastError, "wrong PIN") {
		t.Errorf("last error %q", st.LastError)
	}
	right, _ := MarshalUnsealRequest("id", UnsealOptions{PIN: []byte("1234"), Lifetime: 1})
	if _, err := a.Extension(ExtUnseal, right); err != nil {
		t.Fatal(err)
	}
	if !ts.identityStatus(t, "id").Unsealed {
		t.Fatal("not unsealed")
	}

	// An unsealer that cannot take a PIN refuses the request.
	ts2 := startServer(t, Config{Unsealer: f}, Identity{Blob: k.blob})
	if _, err := ts2.dial(t).Extension(ExtUnseal, right); err == nil {
		t.Fatal("a PIN went to an unsealer that cannot take one")
	}
	if st := ts2.identityStatus(t, "id"); !strings.Contains(st.LastError, "cannot take a PIN") {
		t.Errorf("last error %q", st.LastError)
	}
}

func TestUnsealRequestCompat(t *testing.T) {
	old := ssh.Marshal(&unsealRequest{Name: "id", LifetimeSecs: 5})
	plain, _ := MarshalUnsealRequest("id", UnsealOptions{Lifetime: 5e9})
	if string(old) != string(plain) {
		t.Errorf("a request without options is %x, want the old format %x", plain, old)
	}
	r, ok := parseUnsealRequest(old)
	if !ok || string(r.name) != "id" || r.life != 5 || r.pin != nil || r.flags != 0 {
		t.Errorf("old request parsed as %+v, %v", r, ok)
	}
	full, _ := MarshalUnsealRequest("id", UnsealOptions{Confirm: true, PIN: []byte("pin")})
	if r, ok = parseUnsealRequest(full); !ok || string(r.pin) != "pin" || r.flags != UnsealConfirm {
		t.Errorf("full request parsed as %+v, %v", r, ok)
	}
	if _, ok := parseUnsealRequest(append(old, 0)); ok {
		t.Error("trailing byte accepted")
	}
}
