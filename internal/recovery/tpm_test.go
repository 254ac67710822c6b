package recovery

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/recovery/leaktest"
	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// testTPM is a TPM for a test: the in-process simulator (one per process:
// close one before opening another) or a swtpm process.
type testTPM struct {
	t        testing.TB
	kind     string
	stateDir string
	sw       *swtpmtest.Instance
	*tpmdev.TPM
}

func newTPM(t testing.TB, kind string) *testTPM {
	t.Helper()
	x := &testTPM{t: t, kind: kind, stateDir: t.TempDir()}
	if kind == "swtpm" {
		x.sw = swtpmtest.Start(t)
	}
	x.open()
	t.Cleanup(func() { x.TPM.Close() })
	return x
}

func (x *testTPM) open() {
	x.t.Helper()
	spec := tpmdev.Spec{Kind: tpmdev.KindSim}
	if x.sw != nil {
		var err error
		if spec, err = tpmdev.ParseSpec(x.sw.Spec()); err != nil {
			x.t.Fatal(err)
		}
	}
	tpm, err := tpmdev.Open(context.Background(), spec, tpmdev.Options{StateDir: x.stateDir})
	if err != nil {
		x.t.Fatal(err)
	}
	x.TPM = tpm
}

// dirs are the directories where the TPM keeps state on disk.
func (x *testTPM) dirs() []string {
	if x.sw != nil {
		return []string{x.stateDir, x.sw.Dir, x.sw.StateDir}
	}
	return []string{x.stateDir}
}

func openStore(t testing.TB) *sealstore.Store {
	t.Helper()
	s, err := sealstore.Open(filepath.Join(t.TempDir(), "identities"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sealInto seals seed as identity name in store.
func sealInto(t testing.TB, tpm tpmseal.TPM, store *sealstore.Store, name string, seed []byte) *sealstore.Blob {
	t.Helper()
	b, err := tpmseal.Seal(context.Background(), tpm, seed, tpmseal.SealOptions{Name: name, Comment: "me@example"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Create(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func unsealSeed(t testing.TB, tpm tpmseal.TPM, b *sealstore.Blob) []byte {
	t.Helper()
	seed := make([]byte, sealstore.SeedSize)
	if err := tpmseal.Unseal(context.Background(), tpm, b, seed); err != nil {
		t.Fatal(err)
	}
	return seed
}

var kinds = []string{"sim", "swtpm"}

// The story of the issue: an identity with a backup, its blob damaged,
// restored from the backup with the same public key, usable again.
func TestBackupDamageRestore(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			tpm := newTPM(t, kind)
			store := openStore(t)
			seed := randomSeed(t)
			b := sealInto(t, tpm, store, "work", seed)
			r, keys := keyKinds[len(keyKinds)-1].make(t) // passphrase
			backup := filepath.Join(t.TempDir(), "work.age")
			if err := BackupIdentity(ctx, tpm, b, tpmseal.UnsealOptions{}, backup, r); err != nil {
				t.Fatal(err)
			}
			if err := BackupIdentity(ctx, tpm, b, tpmseal.UnsealOptions{}, backup, r); !errors.Is(err, ErrFileExists) {
				t.Fatalf("second backup to the same file: %v; want ErrFileExists", err)
			}

			// The blob is damaged: restore refuses to replace it.
			if err := os.WriteFile(store.Path("work"), []byte("garbage\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			bk, err := ReadBackupFile(backup, keys)
			if err != nil {
				t.Fatal(err)
			}
			defer bk.Destroy()
			if _, err := Restore(ctx, tpm, store, bk, tpmseal.SealOptions{Name: "work"}); !errors.Is(err, sealstore.ErrExists) {
				t.Fatalf("restore over a damaged blob: %v; want ErrExists", err)
			}
			if data, _ := os.ReadFile(store.Path("work")); string(data) != "garbage\n" {
				t.Fatal("the damaged blob was touched")
			}

			// Removed by the user, then restored.
			if err := os.Remove(store.Path("work")); err != nil {
				t.Fatal(err)
			}
			got, err := Restore(ctx, tpm, store, bk, tpmseal.SealOptions{Name: "work", Comment: bk.Comment})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.PublicKey.Marshal(), b.PublicKey.Marshal()) || got.Comment != "me@example" {
				t.Fatal("the restored identity differs")
			}
			loaded, err := store.Load("work")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(unsealSeed(t, tpm, loaded), seed) {
				t.Fatal("the restored identity unseals to another seed")
			}
		})
	}
}

// A backup is only written from a blob that unseals to its own public key.
func TestBackupIdentityRefusesDamagedBlob(t *testing.T) {
	ctx := context.Background()
	tpm := newTPM(t, "sim")
	store := openStore(t)
	b := sealInto(t, tpm, store, "work", randomSeed(t))
	r, _ := keyKinds[0].make(t)
	// The blob's public key is another key's: the TPM unseals, the check
	// fails, and nothing is written.
	other, err := sealstore.PublicKey(randomSeed(t))
	if err != nil {
		t.Fatal(err)
	}
	bad := *b
	bad.PublicKey = other
	path := filepath.Join(t.TempDir(), "work.age")
	if err := BackupIdentity(ctx, tpm, &bad, tpmseal.UnsealOptions{}, path, r); !errors.Is(err, ErrSeedMismatch) {
		t.Fatalf("BackupIdentity = %v; want ErrSeedMismatch", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a backup was written")
	}
	// A PCR moved: the TPM refuses, nothing is written.
	err = tpm.Run(ctx, func(t2 transport.TPM) error { return tpmdev.ExtendPCR(t2, 7, []byte("new boot state")) })
	if err != nil {
		t.Fatal(err)
	}
	if err := BackupIdentity(ctx, tpm, b, tpmseal.UnsealOptions{}, path, r); !errors.Is(err, tpmseal.ErrPCRMismatch) {
		t.Fatalf("BackupIdentity = %v; want ErrPCRMismatch", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a backup was written")
	}
}

func TestSRKFile(t *testing.T) {
	tpm := newTPM(t, "sim")
	data, srk, err := ExportSRK(context.Background(), tpm)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSRK(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Name, srk.Name) {
		t.Fatal("the parsed SRK has another Name")
	}
	block, _ := pem.Decode(data)
	if block.Type != "ICN AGENT SRK" || block.Headers["Name"] != hex.EncodeToString(srk.Name) {
		t.Fatalf("PEM block %q with headers %v", block.Type, block.Headers)
	}
	// The body is the TPM2B_PUBLIC, as tpm2_readpublic -o writes it.
	if !bytes.Equal(block.Bytes, tpm2.Marshal(tpm2.New2B(srk.Public))) {
		t.Fatal("the body is not the SRK's TPM2B_PUBLIC")
	}

	reencode := func(mutate func(b *pem.Block)) []byte {
		b := *block
		b.Headers = map[string]string{"Name": block.Headers["Name"]}
		b.Bytes = bytes.Clone(block.Bytes)
		mutate(&b)
		return pem.EncodeToMemory(&b)
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"name header edited", reencode(func(b *pem.Block) { b.Headers["Name"] = "000b" + strings.Repeat("00", 32) }), "is not the key's Name"},
		{"no name header", reencode(func(b *pem.Block) { delete(b.Headers, "Name") }), "missing or bad Name header"},
		{"extra header", reencode(func(b *pem.Block) { b.Headers["Comment"] = "x" }), "unexpected PEM header"},
		{"wrong type", reencode(func(b *pem.Block) { b.Type = "ICN AGENT MIGRATION" }), `type "ICN AGENT MIGRATION"`},
		{"point changed", reencode(func(b *pem.Block) { b.Bytes[len(b.Bytes)-1] ^= 1 }), "srk"},
		{"RSA key", reencode(func(b *pem.Block) { b.Bytes = tpm2.Marshal(tpm2.New2B(tpm2.RSASRKTemplate)) }), "not a TCG ECC P-256 storage root key"},
		{"trailing bytes", reencode(func(b *pem.Block) { b.Bytes = append(b.Bytes, 0) }), "not a TPM2B_PUBLIC"},
		{"two blocks", append(bytes.Clone(data), data...), "exactly one PEM block"},
		{"not PEM", []byte("000b1234"), "not a PEM file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSRK(tt.data)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseSRK = %v; want ErrMalformed mentioning %q", err, tt.want)
			}
		})
	}
}

// migrationFixture seals an identity on a simulator and wraps it for a
// swtpm, the two TPMs of most migration tests.
type migrationFixture struct {
	seed      []byte
	src       *sealstore.Blob
	srcTPM    *testTPM
	dst       *testTPM
	dstStore  *sealstore.Store
	migration *Migration
}

func newMigration(t *testing.T, pcrs []int) *migrationFixture {
	t.Helper()
	f := &migrationFixture{seed: randomSeed(t)}
	f.dst = newTPM(t, "swtpm")
	f.dstStore = openStore(t)
	_, target, err := ExportSRK(context.Background(), f.dst)
	if err != nil {
		t.Fatal(err)
	}
	f.srcTPM = newTPM(t, "sim")
	f.src = sealInto(t, f.srcTPM, openStore(t), "work", f.seed)
	if f.migration, err = Migrate(context.Background(), f.srcTPM, f.src, tpmseal.UnsealOptions{}, target, pcrs); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMigrateAndImport(t *testing.T) {
	ctx := context.Background()
	f := newMigration(t, []int{7, 0})
	m := f.migration
	if !slices.Equal(m.PCRs, []int{0, 7}) || m.Name != "work" || m.Comment != "me@example" || !bytes.Equal(m.SourceSRKName, f.src.SRKName) {
		t.Fatalf("migration %+v", m)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, f.seed) {
		t.Fatal("the migration file holds the seed")
	}
	parsed, err := ParseMigration(data)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := parsed.Marshal(); err != nil || !bytes.Equal(again, data) {
		t.Fatalf("re-marshal differs: %v", err)
	}

	// Migrating to itself is refused.
	_, self, err := ExportSRK(ctx, f.srcTPM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(ctx, f.srcTPM, f.src, tpmseal.UnsealOptions{}, self, nil); !errors.Is(err, ErrSameTPM) {
		t.Fatalf("migrate to itself: %v; want ErrSameTPM", err)
	}

	// The target: the same key, sealed to its own SRK, and it signs.
	b, err := ImportMigration(ctx, f.dst, f.dstStore, parsed, tpmseal.SealOptions{Comment: parsed.Comment})
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "work" || b.Comment != "me@example" || !slices.Equal(b.Policy.Indexes(), []int{0, 7}) {
		t.Fatalf("imported %s %q PCRs %v", b.Name, b.Comment, b.Policy.Indexes())
	}
	if !bytes.Equal(b.PublicKey.Marshal(), f.src.PublicKey.Marshal()) || bytes.Equal(b.SRKName, f.src.SRKName) {
		t.Fatal("wrong key or wrong SRK on the target")
	}
	loaded, err := f.dstStore.Load("work")
	if err != nil {
		t.Fatal(err)
	}
	seed := unsealSeed(t, f.dst, loaded)
	sig := ed25519.Sign(ed25519.NewKeyFromSeed(seed), []byte("hello"))
	if !ed25519.Verify(f.src.PublicKey.(ssh.CryptoPublicKey).CryptoPublicKey().(ed25519.PublicKey), []byte("hello"), sig) {
		t.Fatal("the target's signature does not verify with the source's key")
	}
	// Once per name: a second import under the same name is refused
	// before the TPM is asked.
	if _, err := ImportMigration(ctx, f.dst, f.dstStore, parsed, tpmseal.SealOptions{}); !errors.Is(err, sealstore.ErrExists) {
		t.Fatalf("second import: %v; want ErrExists", err)
	}
	// Other PCRs, another name.
	b2, err := ImportMigration(ctx, f.dst, f.dstStore, parsed, tpmseal.SealOptions{Name: "work2", PCRs: []int{7}})
	if err != nil || !slices.Equal(b2.Policy.Indexes(), []int{7}) {
		t.Fatalf("import as work2 on PCR 7: %v", err)
	}
}

// A third TPM can do nothing with a migration file; nor can the target
// with one whose header was changed.
func TestImportMigrationRefusals(t *testing.T) {
	ctx := context.Background()
	f := newMigration(t, nil)
	f.srcTPM.Close()

	third := newTPM(t, "sim")
	store := openStore(t)
	if _, err := ImportMigration(ctx, third, store, f.migration, tpmseal.SealOptions{}); !errors.Is(err, sealstore.ErrNotForThisTPM) {
		t.Fatalf("third TPM: %v; want ErrNotForThisTPM", err)
	}
	_, thirdSRK, err := ExportSRK(ctx, third)
	if err != nil {
		t.Fatal(err)
	}
	forged := *f.migration
	wrapped := *forged.Wrapped
	wrapped.ParentName = thirdSRK.Name
	forged.Wrapped = &wrapped
	_, err = ImportMigration(ctx, third, store, &forged, tpmseal.SealOptions{})
	if !errors.Is(err, sealstore.ErrDuplicateRejected) || !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Fatalf("third TPM, target name forged: %v; want ErrDuplicateRejected, TPM_RC_INTEGRITY", err)
	}
	if names := dirNames(t, store.Dir()); len(names) != 0 {
		t.Fatalf("the third TPM's store holds %v", names)
	}

	tests := []struct {
		name   string
		mutate func(m *Migration)
	}{
		{"fewer PCRs", func(m *Migration) { m.PCRs = []int{7} }},
		{"other comment", func(m *Migration) { m.Comment = "attacker@example" }},
		{"other name", func(m *Migration) { m.Name = "admin" }},
		{"older", func(m *Migration) { m.Created = m.Created.Add(-time.Hour) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			altered := *f.migration
			tt.mutate(&altered)
			data, err := altered.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := ParseMigration(data)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ImportMigration(ctx, f.dst, f.dstStore, parsed, tpmseal.SealOptions{Name: "x"}); !errors.Is(err, ErrHeaderAltered) {
				t.Fatalf("ImportMigration = %v; want ErrHeaderAltered", err)
			}
			if names := dirNames(t, f.dstStore.Dir()); len(names) != 0 {
				t.Fatalf("the target's store holds %v", names)
			}
		})
	}
}

func TestParseMigrationMalformed(t *testing.T) {
	f := newMigration(t, nil)
	good, err := f.migration.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	body := block.Bytes
	// Offsets into the body, computed from the layout.
	off := 4 + len(migrationMagic)
	rewrap := func(b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "ICN AGENT MIGRATION", Bytes: b}) }
	withVersion := func(v uint32) []byte {
		b := bytes.Clone(body)
		binary.BigEndian.PutUint32(b[off:], v)
		return rewrap(b)
	}
	withPCRs := func(pcrs ...byte) []byte {
		m := *f.migration
		var w []byte
		h, err := m.header()
		if err != nil {
			t.Fatal(err)
		}
		// Rebuild the header with the raw PCR bytes.
		r := reader{buf: h}
		for _, field := range []string{"magic"} {
			v, _ := r.string(field, 64)
			w = appendString(w, v)
		}
		ver, _ := r.uint32("version")
		w = binary.BigEndian.AppendUint32(w, ver)
		for _, field := range []string{"name", "comment", "key"} {
			v, _ := r.string(field, 1024)
			w = appendString(w, v)
		}
		r.string("pcrs", 24)
		w = appendString(w, pcrs)
		w = append(w, r.buf...)
		w = appendString(w, m.Wrapped.Public)
		w = appendString(w, m.Wrapped.Private)
		w = appendString(w, m.Wrapped.EncryptedSeed)
		return rewrap(w)
	}
	tests := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"newer version", withVersion(2), ErrUnsupportedVersion, "version 2"},
		{"trailing bytes", rewrap(append(bytes.Clone(body), 0)), ErrMalformed, "trailing"},
		{"truncated", rewrap(body[:len(body)-5]), ErrMalformed, "truncated"},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "ICN AGENT MIGRATION", Headers: map[string]string{"A": "b"}, Bytes: body}), ErrMalformed, "headers"},
		{"a backup", []byte("-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"), ErrMalformed, "type"},
		{"PCRs out of order", withPCRs(7, 0), ErrMalformed, "want strictly increasing"},
		{"PCR 24", withPCRs(0, 24), ErrMalformed, "out of range"},
		{"no PCRs", withPCRs(), ErrMalformed, "want 1 to 24 PCRs"},
		{"good", withPCRs(0, 7), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMigration(tt.data)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("ParseMigration = %v; want %v mentioning %q", err, tt.want, tt.text)
			}
		})
	}
	// Every truncation of the body is an error, never a panic.
	for n := range len(body) {
		if _, err := ParseMigration(rewrap(body[:n])); err == nil {
			t.Fatalf("body truncated to %d bytes parsed", n)
		}
	}
}

// No operation writes the seed, or a key derived from it, to disk in clear:
// seal a known seed, back it up to every kind of key, restore it, migrate
// it to another TPM and import it there, then read every file in every
// directory any of it touched.
func TestNoSeedOnDisk(t *testing.T) {
	ctx := context.Background()
	seed := randomSeed(t)
	dst := newTPM(t, "swtpm")
	dstStore := openStore(t)
	srkFile := filepath.Join(t.TempDir(), "target.srk")
	srkData, _, err := ExportSRK(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteNewFile(srkFile, srkData); err != nil {
		t.Fatal(err)
	}

	src := newTPM(t, "sim")
	srcStore := openStore(t)
	b := sealInto(t, src, srcStore, "work", seed)
	out := t.TempDir()
	for i, kk := range keyKinds {
		r, keys := kk.make(t)
		path := filepath.Join(out, "backup"+string(rune('a'+i))+".age")
		if err := BackupIdentity(ctx, src, b, tpmseal.UnsealOptions{}, path, r); err != nil {
			t.Fatal(err)
		}
		bk, err := ReadBackupFile(path, keys)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Restore(ctx, src, srcStore, bk, tpmseal.SealOptions{Name: "restored" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
		bk.Destroy()
	}
	target, err := ReadSRKFile(srkFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Migrate(ctx, src, b, tpmseal.UnsealOptions{}, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	migFile := filepath.Join(out, "work.migrate")
	if err := WriteNewFile(migFile, data); err != nil {
		t.Fatal(err)
	}
	parsed, err := ReadMigrationFile(migFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ImportMigration(ctx, dst, dstStore, parsed, tpmseal.SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(unsealSeed(t, dst, got), seed) {
		t.Fatal("the migrated identity unseals to another seed")
	}

	roots := []string{out, filepath.Dir(srkFile), srcStore.Dir(), dstStore.Dir()}
	roots = append(roots, src.dirs()...)
	roots = append(roots, dst.dirs()...)
	found, n, err := leaktest.Scan(roots, leaktest.Ed25519Secrets(seed))
	if err != nil {
		t.Fatal(err)
	}
	if n < 2*len(keyKinds)+4 {
		t.Fatalf("scanned only %d files", n)
	}
	for _, f := range found {
		t.Errorf("secret on disk: %v", f)
	}
	t.Logf("scanned %d files in %d directories: no secret", n, len(roots))
}
