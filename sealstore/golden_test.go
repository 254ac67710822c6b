package sealstore_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

var updateGolden = flag.Bool("update-golden", false, "reseal testdata/golden/work.sealed with the committed simulator seed")

// The golden blob was sealed by the simulator whose seed is committed
// beside it (testdata/golden/sim-seed), to PCRs 0 and 7 at their power-on
// values. Any simulator started from that seed is the same TPM, so the test
// proves the on-disk format and the TPM side together: the committed bytes
// parse, re-encode to the same bytes, and unseal to a seed whose public key
// is the committed one.
func TestGoldenBlob(t *testing.T) {
	state := t.TempDir()
	seed, err := os.ReadFile("testdata/golden/sim-seed")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, tpmdev.SimSeedFile), seed, 0o600); err != nil {
		t.Fatal(err)
	}
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()

	if *updateGolden {
		b, err := sealstore.Generate(context.Background(), tpm, sealstore.SealOptions{Name: "work", Comment: "golden@icn-agent"})
		if err != nil {
			t.Fatal(err)
		}
		data, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/golden/work.sealed", data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/golden/work.pub", b.AuthorizedKey(), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	data, err := os.ReadFile("testdata/golden/work.sealed")
	if err != nil {
		t.Fatal(err)
	}
	wantPub, err := os.ReadFile("testdata/golden/work.pub")
	if err != nil {
		t.Fatal(err)
	}
	b, err := sealstore.ParseBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "work" || b.Comment != "golden@icn-agent" || !slices.Equal(b.Policy.Indexes(), []int{0, 7}) {
		t.Errorf("golden blob fields: name %q comment %q pcrs %v", b.Name, b.Comment, b.Policy.Indexes())
	}
	if !bytes.Equal(b.AuthorizedKey(), wantPub) {
		t.Errorf("golden public key line:\n%s\nwant\n%s", b.AuthorizedKey(), wantPub)
	}
	again, err := b.Marshal()
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("re-encoding the golden blob changed it (%v)", err)
	}
	got := make([]byte, sealstore.SeedSize)
	if err := sealstore.Unseal(context.Background(), tpm, b, got); err != nil {
		t.Fatal(err)
	}
	pub, err := sealstore.PublicKey(got)
	if err != nil || !bytes.Equal(pub.Marshal(), b.PublicKey.Marshal()) {
		t.Fatalf("golden blob unsealed to a seed of another key (%v)", err)
	}
}
