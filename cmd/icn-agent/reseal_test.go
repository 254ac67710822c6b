package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adrg/xdg"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// Reseal, on both TPMs, as the command does it: a blob that unseals is
// resealed to the same key; one whose PCRs moved is left byte for byte,
// with an error naming the PCR, and no backup or temporary file behind.
func TestResealCommand(t *testing.T) {
	for _, kind := range []string{"sim", "swtpm"} {
		t.Run(kind, func(t *testing.T) {
			home := t.TempDir()
			t.Cleanup(xdg.Reload) // runs after Setenv restores the variable
			t.Setenv("XDG_STATE_HOME", filepath.Join(home, "state"))
			xdg.Reload()
			c := &inProcess{t: t, config: filepath.Join(home, "config.toml")}
			if err := os.WriteFile(c.config, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			storeDir := filepath.Join(home, "store")
			spec := tpmdev.Spec{Kind: tpmdev.KindSim}
			tpmFlag := "sim"
			var sw *swtpmtest.Instance
			if kind == "swtpm" {
				sw = swtpmtest.Start(t)
				tpmFlag = sw.Spec()
				var err error
				if spec, err = tpmdev.ParseSpec(tpmFlag); err != nil {
					t.Fatal(err)
				}
			}
			at := []string{"--tpm", tpmFlag, "--store", storeDir}

			// "bound" is sealed while PCR 16 holds a measurement that a
			// reboot clears; "free" only to PCR 7.
			tpm, err := tpmdev.Open(context.Background(), spec, tpmdev.Options{})
			if err != nil {
				t.Fatal(err)
			}
			store, err := sealstore.Open(storeDir)
			if err != nil {
				t.Fatal(err)
			}
			err = tpm.Run(context.Background(), func(tp transport.TPM) error { return tpmdev.ExtendPCR(tp, 16, []byte("boot measurement")) })
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range []tpmseal.SealOptions{{Name: "bound", PCRs: []int{7, 16}}, {Name: "free", PCRs: []int{7}}} {
				b, err := tpmseal.Generate(context.Background(), tpm, o)
				if err != nil {
					t.Fatal(err)
				}
				if err := store.Create(b); err != nil {
					t.Fatal(err)
				}
			}
			tpm.Close()
			if sw != nil {
				sw.Restart(t) // the simulator reboots with every command
			}

			before, err := os.ReadFile(store.Path("bound"))
			if err != nil {
				t.Fatal(err)
			}
			code, _, stderr := c.run(append([]string{"reseal", "bound", "--pcrs", "7"}, at...)...)
			if code != cli.ExitError || !strings.Contains(stderr, "cannot unseal bound in the current platform state, so nothing was changed: sealstore: bound: PCR 16 changed since it was sealed") {
				t.Errorf("reseal of a blob whose PCR moved: exit %d, %s", code, stderr)
			}
			if after, err := os.ReadFile(store.Path("bound")); err != nil || !bytes.Equal(after, before) {
				t.Errorf("a failed reseal changed bound.sealed (%v)", err)
			}

			pub, err := os.ReadFile(filepath.Join(storeDir, "free.pub"))
			if err != nil {
				t.Fatal(err)
			}
			freeBefore, _ := os.ReadFile(store.Path("free"))
			out := c.ok(append([]string{"reseal", "free", "--pcrs", "0,7"}, at...)...)
			if !strings.HasPrefix(out, "resealed free (") || !strings.Contains(out, "PCRs 0,7 to their current values") {
				t.Errorf("reseal output %q", out)
			}
			if got := c.ok(append([]string{"pubkey", "free"}, at...)...); got != string(pub) {
				t.Errorf("public key after reseal %q, want %q", got, pub)
			}
			b, err := store.Load("free")
			if err != nil || !equalInts(b.Policy.Indexes(), []int{0, 7}) {
				t.Errorf("resealed blob: %v, PCRs %v", err, b.Policy.Indexes())
			}
			if after, _ := os.ReadFile(store.Path("free")); bytes.Equal(after, freeBefore) {
				t.Errorf("reseal did not write a new blob")
			}
			c.ok(append([]string{"check", "free"}, at...)...)

			names, err := os.ReadDir(storeDir)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range names {
				got = append(got, n.Name())
			}
			if want := "bound.pub bound.sealed free.pub free.sealed"; strings.Join(got, " ") != want {
				t.Errorf("store holds %v, want %s", got, want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	return joinInts(a) == joinInts(b)
}
