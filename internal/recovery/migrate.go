package recovery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/wire"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// PEM types of the migration files.
const (
	srkPEMType       = "ICN AGENT SRK"
	migrationPEMType = "ICN AGENT MIGRATION"
	// srkNameHeader is the PEM header of an SRK file holding its Name.
	srkNameHeader = "Name"
)

// MigrationVersion is the migration file format version this package reads
// and writes.
const MigrationVersion = 1

// migrationPreamble opens every migration file this package writes.
var migrationPreamble = wire.Preamble{Magic: migrationMagic, Version: MigrationVersion}

const (
	migrationMagic = "icn-agent-migration"
	// maxMigrationFile bounds a migration file, PEM armor included.
	maxMigrationFile = 16 << 10
	// maxSRKFile bounds an SRK file.
	maxSRKFile  = 8 << 10
	srkNameSize = 34
	// maxTPM2B bounds each TPM part of a migration file.
	maxTPM2B = 1024
	// wrappedSize is what a migration wraps: the seed, then the SHA-256
	// digest of the header.
	wrappedSize = sealstore.SeedSize + sha256.Size
)

var (
	// ErrSameTPM means a migration was asked for from a TPM to itself.
	ErrSameTPM = errors.New("recovery: the target is this TPM")
	// ErrHeaderAltered means a migration file unwrapped, but its header
	// (name, comment, public key, PCRs) is not the one it was made with.
	ErrHeaderAltered = errors.New("recovery: the migration file's header was altered after it was written")
)

// MarshalSRK returns the SRK file of srk: its TPM2B_PUBLIC in a PEM block
// with its Name as a header (see the package documentation).
func MarshalSRK(srk *sealstore.SRKPublic) []byte {
	return pem.EncodeToMemory(&pem.Block{
		Type:    srkPEMType,
		Headers: map[string]string{srkNameHeader: hex.EncodeToString(srk.Name)},
		Bytes:   tpm2.Marshal(tpm2.New2B(srk.Public)),
	})
}

// ParseSRK parses an SRK file, checks that it is a TCG ECC P-256 storage
// root key and that its Name header is its Name.
func ParseSRK(data []byte) (*sealstore.SRKPublic, error) {
	if len(data) > maxSRKFile {
		return nil, malformed("srk", "file too large: %d bytes, max %d", len(data), maxSRKFile)
	}
	block, err := decodeOnePEM(data, srkPEMType)
	if err != nil {
		return nil, err
	}
	for k := range block.Headers {
		if k != srkNameHeader {
			return nil, malformed("srk", "unexpected PEM header %q", truncate(k, 32))
		}
	}
	wantName, err := hex.DecodeString(block.Headers[srkNameHeader])
	if err != nil || len(wantName) == 0 {
		return nil, malformed("srk", "missing or bad %s header", srkNameHeader)
	}
	// Check the size prefix before the reflection-based unmarshaller sees
	// the bytes, and that nothing trails.
	if len(block.Bytes) < 2 || int(binary.BigEndian.Uint16(block.Bytes)) != len(block.Bytes)-2 {
		return nil, malformed("srk", "not a TPM2B_PUBLIC")
	}
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](block.Bytes)
	if err != nil {
		return nil, malformed("srk", "%v", err)
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, malformed("srk", "%v", err)
	}
	srk, err := sealstore.NewSRKPublic(*pub)
	if err != nil {
		return nil, fmt.Errorf("%w: srk: %w", ErrMalformed, err)
	}
	if !bytes.Equal(tpm2.Marshal(tpm2.New2B(srk.Public)), block.Bytes) {
		return nil, malformed("srk", "non-canonical encoding")
	}
	if !bytes.Equal(srk.Name, wantName) {
		return nil, malformed("srk", "the %s header is not the key's Name (file damaged or edited)", srkNameHeader)
	}
	return srk, nil
}

// ReadSRKFile reads and parses the SRK file at path.
func ReadSRKFile(path string) (*sealstore.SRKPublic, error) {
	data, err := ReadFileLimited(path, maxSRKFile)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	return ParseSRK(data)
}

// Migration is the content of a migration file: an identity wrapped for
// one target TPM (see the package documentation).
type Migration struct {
	// Name is the identity's name on the source.
	Name string
	// Comment is the identity's comment.
	Comment string
	// PublicKey is the identity's Ed25519 public key.
	PublicKey ssh.PublicKey
	// PCRs are the PCRs (SHA-256 bank) the target should seal to,
	// ascending.
	PCRs []int
	// SourceSRKName is the Name of the source TPM's SRK.
	SourceSRKName []byte
	// Created is when the file was made, to the second.
	Created time.Time
	// Wrapped is the seed and the header digest, wrapped for the target
	// SRK; Wrapped.ParentName is the target SRK's Name.
	Wrapped *sealstore.Duplicate
}

// header returns the encoding of the header fields, magic to created.
func (m *Migration) header() ([]byte, error) {
	if err := sealstore.ValidName(m.Name); err != nil {
		return nil, err
	}
	if err := checkComment(m.Comment); err != nil {
		return nil, err
	}
	if m.PublicKey == nil || m.PublicKey.Type() != ssh.KeyAlgoED25519 {
		return nil, malformed("ssh public key", "want an ssh-ed25519 key")
	}
	if err := checkPCRs(m.PCRs); err != nil {
		return nil, err
	}
	if len(m.SourceSRKName) != srkNameSize {
		return nil, malformed("source srk name", "want %d bytes, got %d", srkNameSize, len(m.SourceSRKName))
	}
	if m.Wrapped == nil || len(m.Wrapped.ParentName) != srkNameSize {
		return nil, malformed("target srk name", "want %d bytes", srkNameSize)
	}
	var w cryptobyte.Builder
	migrationPreamble.Add(&w)
	wire.AddString(&w, []byte(m.Name))
	wire.AddString(&w, []byte(m.Comment))
	wire.AddString(&w, m.PublicKey.Marshal())
	w.AddUint32LengthPrefixed(func(w *cryptobyte.Builder) {
		for _, p := range m.PCRs {
			w.AddUint8(byte(p))
		}
	})
	wire.AddString(&w, m.SourceSRKName)
	wire.AddString(&w, m.Wrapped.ParentName)
	w.AddUint64(uint64(m.Created.Unix()))
	return w.Bytes()
}

func checkPCRs(pcrs []int) error {
	if len(pcrs) == 0 || len(pcrs) > tpmdev.NumPCRs {
		return malformed("pcrs", "want 1 to %d PCRs, got %d", tpmdev.NumPCRs, len(pcrs))
	}
	for i, p := range pcrs {
		if p < 0 || p >= tpmdev.NumPCRs {
			return malformed("pcrs", "PCR %d out of range 0 to %d", p, tpmdev.NumPCRs-1)
		}
		if i > 0 && p <= pcrs[i-1] {
			return malformed("pcrs", "PCR %d after %d: want strictly increasing", p, pcrs[i-1])
		}
	}
	return nil
}

// Marshal returns m as a migration file.
func (m *Migration) Marshal() ([]byte, error) {
	w, err := m.header()
	if err != nil {
		return nil, err
	}
	if err := m.Wrapped.Check(); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(w)
	wire.AddString(b, m.Wrapped.Public)
	wire.AddString(b, m.Wrapped.Private)
	wire.AddString(b, m.Wrapped.EncryptedSeed)
	if w, err = b.Bytes(); err != nil {
		return nil, fmt.Errorf("recovery: migration: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: migrationPEMType, Bytes: w}), nil
}

// ParseMigration parses and checks a migration file. Only the target TPM
// can check the wrapped part fully. Errors wrap ErrMalformed or
// ErrUnsupportedVersion.
func ParseMigration(data []byte) (*Migration, error) {
	if len(data) > maxMigrationFile {
		return nil, malformed("migration", "file too large: %d bytes, max %d", len(data), maxMigrationFile)
	}
	block, err := decodeOnePEM(data, migrationPEMType)
	if err != nil {
		return nil, err
	}
	if len(block.Headers) != 0 {
		return nil, malformed("pem", "unexpected PEM headers")
	}
	r := wire.NewReader(block.Bytes)
	r.Preamble(migrationPreamble)
	m := &Migration{Wrapped: &sealstore.Duplicate{}}
	m.Name = string(r.String("name", maxName))
	m.Comment = string(r.String("comment", maxComment))
	key := r.String("ssh public key", maxSSHKey)
	pcrs := r.String("pcrs", tpmdev.NumPCRs)
	m.SourceSRKName = bytes.Clone(r.String("source srk name", srkNameSize))
	m.Wrapped.ParentName = bytes.Clone(r.String("target srk name", srkNameSize))
	m.Created = time.Unix(int64(r.Uint64("created")), 0).UTC()
	m.Wrapped.Public = bytes.Clone(r.String("tpm2b public", maxTPM2B))
	m.Wrapped.Private = bytes.Clone(r.String("tpm2b private", maxTPM2B))
	m.Wrapped.EncryptedSeed = bytes.Clone(r.String("tpm2b seed", maxTPM2B))
	r.End()
	if err := r.Err(); err != nil {
		return nil, wireError("migration file", err)
	}
	if err := sealstore.ValidName(m.Name); err != nil {
		return nil, malformed("name", "%v", err)
	}
	if m.PublicKey, err = parseEd25519Key(key); err != nil {
		return nil, err
	}
	for _, p := range pcrs {
		m.PCRs = append(m.PCRs, int(p))
	}
	// Field checks (comment, PCRs, SRK names), then the wrapped object's
	// shape.
	if _, err := m.header(); err != nil {
		if errors.Is(err, ErrMalformed) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := m.Wrapped.Check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, strings.TrimPrefix(err.Error(), "sealstore: "))
	}
	return m, nil
}

// ReadMigrationFile reads and parses the migration file at path.
func ReadMigrationFile(path string) (*Migration, error) {
	data, err := ReadFileLimited(path, maxMigrationFile)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	return ParseMigration(data)
}

// TargetSRKName returns the Name of the SRK m is wrapped for.
func (m *Migration) TargetSRKName() []byte { return m.Wrapped.ParentName }

// Migrate unseals identity b on t (the source TPM; opts carry its PIN and
// signed policies, if it has them) and wraps its seed for
// the target TPM whose SRK is target, to be sealed there to pcrs (nil means
// b's PCRs). The seed is in clear only in locked memory, and only for the
// time it takes to wrap it. It returns ErrSameTPM if target is t's own SRK.
func Migrate(ctx context.Context, t tpmseal.TPM, b *sealstore.Blob, opts tpmseal.UnsealOptions, target *sealstore.SRKPublic, pcrs []int) (*Migration, error) {
	if target == nil {
		return nil, errors.New("recovery: migrate: no target SRK")
	}
	if bytes.Equal(target.Name, b.SRKName) {
		return nil, ErrSameTPM
	}
	if pcrs == nil {
		pcrs = b.Policy.Indexes()
	}
	pcrs = slices.Sorted(slices.Values(pcrs))
	m := &Migration{
		Name:          b.Name,
		Comment:       b.Comment,
		PublicKey:     b.PublicKey,
		PCRs:          pcrs,
		SourceSRKName: bytes.Clone(b.SRKName),
		Created:       time.Now().UTC().Truncate(time.Second),
		Wrapped:       &sealstore.Duplicate{ParentName: bytes.Clone(target.Name)},
	}
	header, err := m.header()
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(header)

	seed, err := UnsealChecked(ctx, t, b, opts)
	if err != nil {
		return nil, err
	}
	defer seed.Destroy()
	data, err := secmem.New(wrappedSize)
	if err != nil {
		return nil, err
	}
	defer data.Destroy()
	copy(data.Bytes(), seed.Bytes())
	copy(data.Bytes()[sealstore.SeedSize:], digest[:])
	if m.Wrapped, err = sealstore.NewDuplicate(target, data.Bytes()); err != nil {
		return nil, err
	}
	return m, nil
}

// ImportMigration unwraps m on t (the target TPM), checks that the header
// is the one the source wrote and that the seed is the identity's, and
// seals the seed as a new identity in store, described by opts. An empty
// opts.Name means m.Name, nil opts.PCRs mean m.PCRs; the comment is
// opts.Comment as given. Nothing is written unless everything checks.
//
// A file wrapped for another TPM fails with an error wrapping
// sealstore.ErrNotForThisTPM (or, if its target Name was altered,
// sealstore.ErrDuplicateRejected from the TPM).
func ImportMigration(ctx context.Context, t tpmseal.TPM, store *sealstore.Store, m *Migration, opts tpmseal.SealOptions) (*sealstore.Blob, error) {
	if opts.Name == "" {
		opts.Name = m.Name
	}
	if opts.PCRs == nil {
		opts.PCRs = m.PCRs
	}
	header, err := m.header()
	if err != nil {
		return nil, err
	}
	if err := NameFree(store, opts.Name); err != nil {
		return nil, err
	}
	data, err := secmem.New(wrappedSize)
	if err != nil {
		return nil, err
	}
	defer data.Destroy()
	if err := tpmseal.UnsealDuplicate(ctx, t, m.Wrapped, data.Bytes()); err != nil {
		return nil, err
	}
	seed := data.Bytes()[:sealstore.SeedSize]
	digest := sha256.Sum256(header)
	if subtle.ConstantTimeCompare(data.Bytes()[sealstore.SeedSize:], digest[:]) != 1 {
		return nil, ErrHeaderAltered
	}
	pub, err := sealstore.PublicKey(seed)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pub.Marshal(), m.PublicKey.Marshal()) {
		// Unreachable unless the source wrapped a wrong seed: the header,
		// public key included, is bound to the wrapped data.
		return nil, malformed("ssh public key", "is not the public key of the unwrapped seed")
	}
	return sealNew(ctx, t, store, seed, opts)
}

// ExportSRK returns the SRK file of t's storage root key, and its Name.
func ExportSRK(ctx context.Context, t tpmseal.TPM) ([]byte, *sealstore.SRKPublic, error) {
	srk, err := tpmseal.ReadSRK(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	return MarshalSRK(srk), srk, nil
}
