package provision_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/icn/icn-agent/sealstore/tpmseal"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"filippo.io/age"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/provision"
	"github.com/icn/icn-agent/internal/recovery"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"

	// The tests run on the reference simulator.
	_ "github.com/icn/icn-agent/internal/tpmsim"
)

// setup opens the simulator TPM (one per process: the tests do not run
// in parallel) and an empty store.
func setup(t *testing.T) (*tpmdev.TPM, *sealstore.Store) {
	t.Helper()
	tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	store, err := sealstore.Open(filepath.Join(t.TempDir(), "identities"))
	if err != nil {
		t.Fatal(err)
	}
	return tpm, store
}

func seedOf(b byte) []byte { return bytes.Repeat([]byte{b}, sealstore.SeedSize) }

func TestCreateWithBackup(t *testing.T) {
	ctx := context.Background()
	tpm, store := setup(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id.backup")
	backup := &provision.Backup{Path: path, Recipients: []age.Recipient{id.Recipient()}}
	blob, err := provision.Create(ctx, tpm, store, seedOf(1), tpmseal.SealOptions{Name: "id", Comment: "me"}, backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Load("id"); err != nil {
		t.Fatalf("the identity was not stored: %v", err)
	}
	bk, err := recovery.ReadBackupFile(path, &recovery.Keys{Identities: []age.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Destroy()
	if !bytes.Equal(bk.Seed(), seedOf(1)) || bk.Name != "id" || bk.Comment != "me" || !bytes.Equal(bk.PublicKey.Marshal(), blob.PublicKey.Marshal()) {
		t.Fatalf("backup %q %q does not hold the identity", bk.Name, bk.Comment)
	}
	seed, err := provision.Unseal(ctx, tpm, blob, tpmseal.UnsealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Destroy()
	if !bytes.Equal(seed.Bytes(), seedOf(1)) {
		t.Fatal("the identity unseals to another seed")
	}

	// An existing backup file is never overwritten, and then no
	// identity is stored either.
	before, _ := os.ReadFile(path)
	_, err = provision.Create(ctx, tpm, store, seedOf(2), tpmseal.SealOptions{Name: "other"}, backup)
	if !errors.Is(err, recovery.ErrFileExists) {
		t.Fatalf("existing backup file: %v, want ErrFileExists", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the existing backup file changed")
	}
	if _, err := store.Load("other"); !errors.Is(err, sealstore.ErrNotFound) {
		t.Fatalf("an identity was stored although its backup failed: %v", err)
	}

	// An identity that cannot be stored (its name is taken) takes its
	// new backup with it, and the old identity stays.
	path2 := filepath.Join(t.TempDir(), "again.backup")
	_, err = provision.Create(ctx, tpm, store, nil, tpmseal.SealOptions{Name: "id"}, &provision.Backup{Path: path2, Recipients: backup.Recipients})
	if !errors.Is(err, sealstore.ErrExists) {
		t.Fatalf("taken name: %v, want ErrExists", err)
	}
	if _, err := os.Lstat(path2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the backup of an identity never created was kept: %v", err)
	}
	if b, err := store.Load("id"); err != nil || !bytes.Equal(b.PublicKey.Marshal(), blob.PublicKey.Marshal()) {
		t.Fatalf("the existing identity changed: %v", err)
	}
}

// A new identity without a seed gets a random one.
func TestCreateGenerates(t *testing.T) {
	ctx := context.Background()
	tpm, store := setup(t)
	a, err := provision.Create(ctx, tpm, store, nil, tpmseal.SealOptions{Name: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := provision.Create(ctx, tpm, store, nil, tpmseal.SealOptions{Name: "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.PublicKey.Marshal(), b.PublicKey.Marshal()) {
		t.Fatal("two generated identities have the same key")
	}
}

// A blob that unseals to a seed not its own is damaged.
func TestUnsealSeedMismatch(t *testing.T) {
	ctx := context.Background()
	tpm, store := setup(t)
	a, err := provision.Create(ctx, tpm, store, seedOf(1), tpmseal.SealOptions{Name: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := sealstore.PublicKey(seedOf(2))
	if err != nil {
		t.Fatal(err)
	}
	damaged := *a
	damaged.PublicKey = other
	if _, err := provision.Unseal(ctx, tpm, &damaged, tpmseal.UnsealOptions{}); !errors.Is(err, provision.ErrSeedMismatch) {
		t.Fatalf("Unseal of a damaged blob: %v, want ErrSeedMismatch", err)
	}
	// A reseal never replaces another identity.
	if _, err := provision.Reseal(ctx, tpm, store, a, seedOf(1), tpmseal.SealOptions{Name: "b"}, nil); err == nil {
		t.Fatal("Reseal under another name succeeded")
	}
	// Nor is a wrong seed resealed as the identity.
	if _, err := provision.Reseal(ctx, tpm, store, a, seedOf(2), tpmseal.SealOptions{Name: "a"}, nil); !errors.Is(err, provision.ErrSeedMismatch) {
		t.Fatalf("Reseal of another seed: %v, want ErrSeedMismatch", err)
	}
}

// Reseal changes the PCRs and adds a PIN; the new blob replaces the old
// one only after it unseals with that PIN, and an interrupted reseal
// blocks the next one without changing anything.
func TestReseal(t *testing.T) {
	ctx := context.Background()
	tpm, store := setup(t)
	old, err := provision.Create(ctx, tpm, store, seedOf(3), tpmseal.SealOptions{Name: "r", Comment: "c", PCRs: []int{0, 7}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := provision.Unseal(ctx, tpm, old, tpmseal.UnsealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Destroy()
	pin := []byte("1234")
	called := 0
	policies := func(*sealstore.Blob) []*sealstore.SignedPolicy { called++; return nil }
	blob, err := provision.Reseal(ctx, tpm, store, old, seed.Bytes(), tpmseal.SealOptions{Name: "r", Comment: old.Comment, PCRs: []int{7}, PIN: pin}, policies)
	if err != nil {
		t.Fatal(err)
	}
	if called != 1 {
		t.Errorf("policies called %d times, want once (for the staged blob)", called)
	}
	stored, err := store.Load("r")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stored.Policy.Indexes(), []int{7}) || !stored.Policy.PIN || stored.Comment != "c" || !bytes.Equal(stored.Private, blob.Private) {
		t.Fatalf("stored blob: PCRs %v, PIN %v, comment %q", stored.Policy.Indexes(), stored.Policy.PIN, stored.Comment)
	}
	if _, err := provision.Unseal(ctx, tpm, stored, tpmseal.UnsealOptions{}); !errors.Is(err, tpmseal.ErrPINRequired) {
		t.Fatalf("unseal without the new PIN: %v, want ErrPINRequired", err)
	}
	got, err := provision.Unseal(ctx, tpm, stored, tpmseal.UnsealOptions{PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	got.Destroy()

	// An interrupted reseal left NAME.sealed.bak: nothing changes.
	if err := os.WriteFile(store.BackupPath("r"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = provision.Reseal(ctx, tpm, store, stored, seed.Bytes(), tpmseal.SealOptions{Name: "r", PCRs: []int{0}}, nil)
	if !errors.Is(err, sealstore.ErrResealPending) {
		t.Fatalf("reseal beside a pending one: %v, want ErrResealPending", err)
	}
	if now, err := store.Load("r"); err != nil || !bytes.Equal(now.Private, stored.Private) {
		t.Fatalf("the blob changed: %v", err)
	}
}

// A reseal keeps what it is not told to change.
func TestChangeSealOptions(t *testing.T) {
	key, _, err := sealstore.NewPolicySigningKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := sealstore.NewPolicySigningKey()
	if err != nil {
		t.Fatal(err)
	}
	fixed := &sealstore.Blob{Name: "f", Comment: "c", Policy: sealstore.Policy{Kind: sealstore.PolicyPCR, PCRs: []sealstore.PCRValue{{Index: 0}, {Index: 7}}}}
	signed := &sealstore.Blob{Name: "s", Policy: sealstore.Policy{Kind: sealstore.PolicyAuthorizedPCR, PCRs: []sealstore.PCRValue{{Index: 7}}, Signer: key.PolicyKeyPublic()}}
	for _, tc := range []struct {
		old      *sealstore.Blob
		ch       provision.Change
		pcrs     []int
		signerID string
	}{
		{fixed, provision.Change{}, []int{0, 7}, ""},
		{fixed, provision.Change{PCRs: []int{7}}, []int{7}, ""},
		{fixed, provision.Change{Signer: key}, []int{0, 7}, key.ID()},
		{signed, provision.Change{}, []int{7}, key.ID()},
		{signed, provision.Change{Signer: other, PCRs: []int{0, 7}}, []int{0, 7}, other.ID()},
	} {
		opts, signer, err := tc.ch.SealOptions(tc.old)
		if err != nil {
			t.Fatal(err)
		}
		id := ""
		if signer != nil {
			id = signer.ID()
			if !opts.Signer.Equal(signer.Public) {
				t.Errorf("%s: options and signer disagree", tc.old.Name)
			}
		}
		if opts.Name != tc.old.Name || opts.Comment != tc.old.Comment || !slices.Equal(opts.PCRs, tc.pcrs) || id != tc.signerID {
			t.Errorf("%s with %+v: name %q comment %q PCRs %v signer %q; want PCRs %v signer %q", tc.old.Name, tc.ch, opts.Name, opts.Comment, opts.PCRs, id, tc.pcrs, tc.signerID)
		}
	}
}

// The PIN is asked for only when the identity has one and its policy can
// be satisfied now.
func TestUnsealOptionsAsksPINLast(t *testing.T) {
	ctx := context.Background()
	tpm, store := setup(t)
	pin := []byte("2468")
	withPIN, err := provision.Create(ctx, tpm, store, seedOf(4), tpmseal.SealOptions{Name: "p", PCRs: []int{7}, PIN: pin}, nil)
	if err != nil {
		t.Fatal(err)
	}
	without, err := provision.Create(ctx, tpm, store, seedOf(5), tpmseal.SealOptions{Name: "n", PCRs: []int{7}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	ask := func() ([]byte, error) { asked++; return append([]byte(nil), pin...), nil }

	opts, err := provision.UnsealOptions(ctx, tpm, without, nil, ask)
	if err != nil || opts.PIN != nil || asked != 0 {
		t.Fatalf("identity without a PIN: %v, PIN %q, asked %d times", err, opts.PIN, asked)
	}
	opts, err = provision.UnsealOptions(ctx, tpm, withPIN, nil, ask)
	if err != nil || asked != 1 {
		t.Fatalf("identity with a PIN: %v, asked %d times", err, asked)
	}
	seed, err := provision.Unseal(ctx, tpm, withPIN, opts)
	if err != nil {
		t.Fatal(err)
	}
	seed.Destroy()

	errNoTTY := errors.New("no terminal")
	if _, err := provision.UnsealOptions(ctx, tpm, withPIN, nil, func() ([]byte, error) { return nil, errNoTTY }); err != errNoTTY {
		t.Errorf("PIN source error: %v, want it as it is", err)
	}
	if err := tpm.Run(ctx, func(tt transport.TPM) error { return tpmdev.ExtendPCR(tt, 7, []byte("new firmware")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := provision.UnsealOptions(ctx, tpm, withPIN, nil, ask); !errors.Is(err, tpmseal.ErrPCRMismatch) || asked != 1 {
		t.Fatalf("after PCR 7 changed: %v, asked %d times; want ErrPCRMismatch without asking", err, asked)
	}
}
