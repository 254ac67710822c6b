package unlock

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// Listings gives each identity its status on the TPM, opens the TPM only
// for a store with identities, and says when it could not.
func TestListings(t *testing.T) {
	ctx := context.Background()
	tpm := openTestTPM(t, "sim")
	store, err := sealstore.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	opened := 0
	open := func(context.Context) (*tpmdev.TPM, error) { opened++; return tpm, nil }
	noTPM := func(context.Context) (*tpmdev.TPM, error) { opened++; return nil, errors.New("no TPM here") }
	log := slog.New(slog.DiscardHandler)
	if ls, err := Listings(ctx, store, noTPM, log); err != nil || len(ls) != 0 || opened != 0 {
		t.Fatalf("empty store: %v, %v, TPM opened %d times", ls, err, opened)
	}

	for name, pcrs := range map[string][]int{"plain": nil, "moved": {16}} {
		b, err := tpmseal.Generate(ctx, tpm, tpmseal.SealOptions{Name: name, PCRs: pcrs})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Create(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tpm.Run(ctx, func(tp transport.TPM) error { return tpmdev.ExtendPCR(tp, 16, []byte("moved")) }); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store.Path("bad"), []byte("not a blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	ls, err := Listings(ctx, store, open, log)
	if err != nil {
		t.Fatal(err)
	}
	if opened != 1 || !slices.EqualFunc(ls, []sealstore.Listing{{Name: "bad"}, {Name: "moved"}, {Name: "plain"}}, func(a, b sealstore.Listing) bool { return a.Name == b.Name }) {
		t.Fatalf("listings %+v, TPM opened %d times", ls, opened)
	}
	if ls[0].Status != sealstore.StatusUnreadable || ls[0].Error == "" {
		t.Errorf("bad: %+v", ls[0])
	}
	if ls[1].Status != sealstore.StatusPCRMismatch || !slices.Equal(ls[1].MismatchedPCRs, []int{16}) {
		t.Errorf("moved: %+v", ls[1])
	}
	if ls[2].Status != sealstore.StatusUsable || ls[2].Error != "" {
		t.Errorf("plain: %+v", ls[2])
	}
	if err := tpm.Run(ctx, func(transport.TPM) error { return nil }); !errors.Is(err, tpmdev.ErrClosed) {
		t.Errorf("the TPM Listings opened is not closed: %v", err)
	}

	ls, err = Listings(ctx, store, noTPM, log)
	if err != nil || len(ls) != 3 || ls[0].Status != sealstore.StatusUnreadable || ls[2].Status != sealstore.StatusUnknown || ls[2].Error != "no TPM here" {
		t.Errorf("without a TPM: %+v, %v", ls, err)
	}
}
