//go:build linux

package tpmseal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"runtime"
	"testing"

	"github.com/icn/icn-agent/internal/memscan"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// TestMigrationLeavesNoPlaintext wraps a seed held in locked memory for a
// TPM's storage root key (sealstore.NewDuplicate), imports and unwraps it
// there into locked memory (tpmseal.UnsealDuplicate), and then reads all
// of this process's readable memory for the seed, as
// TestSealLeavesNoPlaintext does: apart from the locked buffer holding the
// seed and its unwrapped copy, it must be nowhere. On the simulator,
// matches in its static memory (the TPM's own object slots) are logged
// and not counted, as there.
func TestMigrationLeavesNoPlaintext(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) { testMigrationLeavesNoPlaintext(t, kind) })
	}
}

func testMigrationLeavesNoPlaintext(t *testing.T, kind string) {
	f := newFixture(t, kind, nil)
	var tpmLo, tpmHi uint64 // the simulator's static memory
	if kind == "sim" {
		tpmLo, tpmHi = bssSection(t)
	}
	// seed || the unwrapped seed, in locked memory.
	sec, err := secmem.New(2 * sealstore.SeedSize)
	if err != nil {
		t.Fatal(err)
	}
	defer sec.Destroy()
	seed := sec.Bytes()[:sealstore.SeedSize]
	got := sec.Bytes()[sealstore.SeedSize:]
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	patterns := []memscan.Pattern{{Name: "seed", Bytes: seed}, {Name: "seed[:16]", Bytes: seed[:16]}, {Name: "seed[16:]", Bytes: seed[16:]}}

	d, err := sealstore.NewDuplicate(readSRK(t, f.tpm), seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpmseal.UnsealDuplicate(context.Background(), f.tpm, d, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, seed) {
		t.Fatal("the unwrapped data differs from the wrapped seed")
	}
	runtime.GC()

	hits, own := scanSelf(t, patterns, sec.Bytes())
	if own < 2 {
		t.Fatalf("the scan found %d matches in its own locked buffer, want the seed and its unwrapped copy: it proves nothing", own)
	}
	for _, h := range hits {
		if h.Addr >= tpmLo && h.Addr < tpmHi {
			t.Logf("in the simulator's static memory (the TPM's own): %s at %#x", h.Pattern, h.Addr)
			continue
		}
		t.Errorf("%v (preceded by %x)", h, h.Before)
	}
}
