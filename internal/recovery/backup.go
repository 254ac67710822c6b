package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/wire"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// BackupVersion is the backup plaintext format version this package reads
// and writes.
const BackupVersion = 1

// backupPreamble opens every backup plaintext this package writes.
var backupPreamble = wire.Preamble{Magic: backupMagic, Version: BackupVersion}

const (
	backupMagic = "icn-agent-backup"
	// maxBackupPlaintext bounds a backup's plaintext; a version 1 one is
	// at most about 1.2 KiB.
	maxBackupPlaintext = 4096
	// maxBackupFile bounds a backup file, armor included.
	maxBackupFile = 64 << 10
	maxName       = 64
	maxSSHKey     = 512
)

// Backup is the content of a backup file: an identity's seed with its name,
// comment and public key. The seed lives in locked memory; call Destroy
// when done.
type Backup struct {
	// Name is the identity's name when it was backed up.
	Name string
	// Comment is the identity's comment, possibly empty.
	Comment string
	// PublicKey is the seed's Ed25519 public key.
	PublicKey ssh.PublicKey
	// Created is when the backup was made, to the second.
	Created time.Time

	seed *secmem.Buffer
}

// NewBackup returns a backup of seed (copied into locked memory) as
// identity name with comment, made at created. It computes the public key.
func NewBackup(name, comment string, seed []byte, created time.Time) (*Backup, error) {
	if err := sealstore.ValidName(name); err != nil {
		return nil, err
	}
	if err := checkComment(comment); err != nil {
		return nil, err
	}
	pub, err := sealstore.PublicKey(seed)
	if err != nil {
		return nil, err
	}
	buf, err := secmem.New(len(seed))
	if err != nil {
		return nil, err
	}
	copy(buf.Bytes(), seed)
	return &Backup{Name: name, Comment: comment, PublicKey: pub, Created: created.UTC().Truncate(time.Second), seed: buf}, nil
}

// Seed returns the seed, in locked memory that Destroy wipes. It is nil
// after Destroy.
func (b *Backup) Seed() []byte { return b.seed.Bytes() }

// Destroy wipes the seed. It is safe to call more than once.
func (b *Backup) Destroy() {
	if b != nil {
		b.seed.Destroy()
	}
}

// marshal returns the plaintext of b (see the package documentation) in
// locked memory.
func (b *Backup) marshal() (*secmem.Buffer, error) {
	seed := b.Seed()
	if len(seed) != sealstore.SeedSize {
		return nil, errors.New("recovery: backup has no seed (destroyed?)")
	}
	var head cryptobyte.Builder
	backupPreamble.Add(&head)
	wire.AddString(&head, []byte(b.Name))
	wire.AddString(&head, []byte(b.Comment))
	wire.AddString(&head, b.PublicKey.Marshal())
	h, err := head.Bytes()
	if err != nil {
		return nil, fmt.Errorf("recovery: backup: %w", err)
	}
	out, err := secmem.New(len(h) + 4 + len(seed) + 8)
	if err != nil {
		return nil, err
	}
	// A fixed Builder never reallocates: the seed is written into the
	// locked buffer and nowhere else.
	w := cryptobyte.NewFixedBuilder(out.Bytes()[:0:out.Len()])
	w.AddBytes(h)
	wire.AddString(w, seed)
	w.AddUint64(uint64(b.Created.Unix()))
	if plain, err := w.Bytes(); err != nil || len(plain) != out.Len() {
		out.Destroy()
		return nil, errors.New("recovery: internal error: backup size")
	}
	return out, nil
}

// ParseBackup parses a backup plaintext and checks every field, including
// that the public key is the seed's. The seed is copied into locked memory;
// data is not kept. Errors wrap ErrMalformed or ErrUnsupportedVersion.
func ParseBackup(data []byte) (*Backup, error) {
	if len(data) > maxBackupPlaintext {
		return nil, malformed("backup", "%d bytes, max %d", len(data), maxBackupPlaintext)
	}
	r := wire.NewReader(data)
	r.Preamble(backupPreamble)
	name := string(r.String("name", maxName))
	comment := string(r.String("comment", maxComment))
	keyBytes := r.String("ssh public key", maxSSHKey)
	// A slice of data: NewBackup copies it into locked memory.
	seed := r.String("seed", sealstore.SeedSize)
	created := int64(r.Uint64("created"))
	r.End()
	if err := r.Err(); err != nil {
		return nil, wireError("backup", err)
	}
	if err := sealstore.ValidName(name); err != nil {
		return nil, malformed("name", "%v", err)
	}
	if err := checkComment(comment); err != nil {
		return nil, err
	}
	pub, err := parseEd25519Key(keyBytes)
	if err != nil {
		return nil, err
	}
	if len(seed) != sealstore.SeedSize {
		return nil, malformed("seed", "want %d bytes, got %d", sealstore.SeedSize, len(seed))
	}
	b, err := NewBackup(name, comment, seed, time.Unix(created, 0))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(b.PublicKey.Marshal(), pub.Marshal()) {
		b.Destroy()
		return nil, malformed("ssh public key", "is not the public key of the seed")
	}
	return b, nil
}

// IsBackup reports whether plaintext, decrypted from an age file, is an
// icn-agent backup (of any version).
func IsBackup(plaintext []byte) bool {
	return backupPreamble.Opens(plaintext)
}

// parseEd25519Key parses a canonically encoded ssh-ed25519 wire key.
func parseEd25519Key(wire []byte) (ssh.PublicKey, error) {
	key, err := ssh.ParsePublicKey(wire)
	if err != nil {
		return nil, malformed("ssh public key", "%v", err)
	}
	if key.Type() != ssh.KeyAlgoED25519 {
		return nil, malformed("ssh public key", "type %q, want %q", truncate(key.Type(), 64), ssh.KeyAlgoED25519)
	}
	if !bytes.Equal(key.Marshal(), wire) {
		return nil, malformed("ssh public key", "non-canonical encoding")
	}
	return key, nil
}

// Encrypt returns b as a backup file: age-encrypted to recipients (at least
// one; a passphrase recipient must be alone) and ASCII-armored. The
// plaintext exists only in locked memory and inside age's encryption
// buffer, where it is overwritten by the ciphertext.
func (b *Backup) Encrypt(recipients ...age.Recipient) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errors.New("recovery: no recipients to encrypt the backup to")
	}
	plain, err := b.marshal()
	if err != nil {
		return nil, err
	}
	defer plain.Destroy()
	var out bytes.Buffer
	aw := armor.NewWriter(&out)
	w, err := age.Encrypt(aw, recipients...)
	if err != nil {
		return nil, fmt.Errorf("recovery: encrypt backup: %w", err)
	}
	if _, err := w.Write(plain.Bytes()); err != nil {
		return nil, fmt.Errorf("recovery: encrypt backup: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("recovery: encrypt backup: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("recovery: encrypt backup: %w", err)
	}
	return out.Bytes(), nil
}

// WriteFile encrypts b to recipients (see Encrypt) and writes it to path
// with WriteNewFile: never over an existing file.
func (b *Backup) WriteFile(path string, recipients ...age.Recipient) error {
	data, err := b.Encrypt(recipients...)
	if err != nil {
		return err
	}
	return WriteNewFile(path, data)
}

// DecryptBackup decrypts a backup file (armored or binary age) with keys and
// parses it. See Decrypt for the errors about decryption.
func DecryptBackup(data []byte, keys *Keys) (*Backup, error) {
	plain, err := decrypt(data, keys, maxBackupPlaintext)
	if err != nil {
		return nil, err
	}
	defer plain.Destroy()
	return ParseBackup(plain.Bytes())
}

// ReadBackupFile reads and decrypts the backup file at path.
func ReadBackupFile(path string, keys *Keys) (*Backup, error) {
	data, err := ReadFileLimited(path, maxBackupFile)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	if !IsAgeEncrypted(data) {
		return nil, fmt.Errorf("recovery: %s: %w (want a backup written by icn-agent backup)", path, ErrNotAge)
	}
	return DecryptBackup(data, keys)
}

// BackupIdentity unseals identity b on t (with opts: its PIN and signed
// policies, if it has them) and writes a backup of it to path, encrypted to
// recipients. Nothing is written if path exists, if the TPM does not unseal
// b, or if the seed it unseals is not b's.
func BackupIdentity(ctx context.Context, t tpmseal.TPM, b *sealstore.Blob, opts tpmseal.UnsealOptions, path string, recipients ...age.Recipient) error {
	seed, err := UnsealChecked(ctx, t, b, opts)
	if err != nil {
		return err
	}
	defer seed.Destroy()
	bk, err := NewBackup(b.Name, b.Comment, seed.Bytes(), time.Now())
	if err != nil {
		return err
	}
	defer bk.Destroy()
	return bk.WriteFile(path, recipients...)
}

// ErrSeedMismatch means a blob unsealed, but to a seed that is not the one
// of its recorded public key: the blob is damaged.
var ErrSeedMismatch = errors.New("recovery: the unsealed seed does not match the identity's public key (the blob is damaged)")

// UnsealChecked unseals b (with opts) into locked memory, which the caller
// destroys, and checks the seed against b's public key: a blob that
// unseals to another key (a damaged one) gives an error wrapping
// ErrSeedMismatch. Unseal errors are tpmseal.UnsealWith's, as they are.
func UnsealChecked(ctx context.Context, t tpmseal.TPM, b *sealstore.Blob, opts tpmseal.UnsealOptions) (*secmem.Buffer, error) {
	seed, err := secmem.New(sealstore.SeedSize)
	if err != nil {
		return nil, err
	}
	if err := tpmseal.UnsealWith(ctx, t, b, seed.Bytes(), opts); err != nil {
		seed.Destroy()
		return nil, err
	}
	pub, err := sealstore.PublicKey(seed.Bytes())
	if err != nil {
		seed.Destroy()
		return nil, err
	}
	if !bytes.Equal(pub.Marshal(), b.PublicKey.Marshal()) {
		seed.Destroy()
		return nil, fmt.Errorf("%w: %s", ErrSeedMismatch, b.Name)
	}
	return seed, nil
}

// Restore seals bk's seed on t as a new identity in store, described by
// opts (opts.Name is required; the caller decides the comment, usually
// bk.Comment, and the PCRs). It refuses, before touching the TPM, to
// replace anything in the store: a name already taken by a blob, even a
// damaged one, is an error wrapping sealstore.ErrExists.
func Restore(ctx context.Context, t tpmseal.TPM, store *sealstore.Store, bk *Backup, opts tpmseal.SealOptions) (*sealstore.Blob, error) {
	pub, err := sealstore.PublicKey(bk.Seed())
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pub.Marshal(), bk.PublicKey.Marshal()) {
		return nil, malformed("ssh public key", "is not the public key of the seed")
	}
	return sealNew(ctx, t, store, bk.Seed(), opts)
}

// sealNew seals seed as the new identity opts.Name in store.
func sealNew(ctx context.Context, t tpmseal.TPM, store *sealstore.Store, seed []byte, opts tpmseal.SealOptions) (*sealstore.Blob, error) {
	if err := NameFree(store, opts.Name); err != nil {
		return nil, err
	}
	blob, err := tpmseal.Seal(ctx, t, seed, opts)
	if err != nil {
		return nil, err
	}
	if err := store.Create(blob); err != nil {
		return nil, err
	}
	return blob, nil
}

// NameFree returns nil if store has no identity called name, and otherwise
// an error wrapping sealstore.ErrExists (whether the blob there is usable
// or damaged) or the error that prevented finding out.
func NameFree(store *sealstore.Store, name string) error {
	_, err := store.Load(name)
	switch {
	case errors.Is(err, sealstore.ErrNotFound):
		return nil
	case errors.Is(err, sealstore.ErrBadName):
		return err
	case err == nil, errors.Is(err, sealstore.ErrMalformedBlob), errors.Is(err, sealstore.ErrUnsupportedVersion):
		return fmt.Errorf("%w: %s (%s)", sealstore.ErrExists, name, store.Path(name))
	}
	return err
}
