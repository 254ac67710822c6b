package attesttpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/cryptobyte"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/tpmdev"
)

// TPM is what the attestation key needs of the TPM: exclusive use with the
// storage root key loaded. *tpmdev.TPM implements it.
type TPM interface {
	RunWithSRK(ctx context.Context, fn func(tpm transport.TPM, srk *tpmdev.SRK) error) error
}

var _ TPM = (*tpmdev.TPM)(nil)

// ErrAKWrongTPM means an attestation key file was created under another
// storage root key: another TPM, or this one before it was cleared.
var ErrAKWrongTPM = errors.New("attesttpm: attestation key belongs to another TPM (or to this TPM before it was cleared)")

// AK file format constants.
const (
	akPEMType     = "ICN AGENT ATTESTATION KEY"
	akMagic       = "icn-agent-attestation-key"
	akFileVersion = 1
	maxAKFile     = 16 << 10
	maxTPM2BPriv  = 1024
	maxTPM2BPub   = 1024   // TPM2B_PUBLIC
	maxName       = 2 + 64 // TPM2B_NAME contents
	nameSize      = 2 + 32 // a SHA-256 TPM Name: algorithm id and digest
)

// AK is the attestation key: a restricted ECC P-256 signing key created
// under the storage root key, which signs only what the TPM itself
// produced (quotes, audit digests) and never leaves the TPM.
//
// Its public and private areas (the latter encrypted to the SRK) are kept
// in a small file; the key is loaded into the TPM on first use and kept
// loaded, as a transient object, for the life of the process. An AK is
// safe for concurrent use; its TPM commands are serialized by the TPM.
// Use one AK with one TPM.
type AK struct {
	srkName []byte
	public  []byte // marshalled TPM2B_PUBLIC
	private []byte // marshalled TPM2B_PRIVATE
	name    []byte
	key     *ecdsa.PublicKey

	mu     sync.Mutex
	handle tpm2.TPMHandle // 0 while not loaded
}

// LoadOrCreateAK returns the attestation key kept in the file at path,
// creating the key and the file if there is none.
//
// Creating runs TPM2_Create under the SRK and writes the file (mode 0600;
// its directory is created 0700 if missing) through a synced temporary
// file that is linked into place, so the file is never overwritten and
// never seen half-written; if another process creates it meanwhile, its
// key is used. Loading an existing file does not touch the TPM: the key is
// loaded lazily by the first Quote, which fails with ErrAKWrongTPM if the
// file belongs to another TPM.
//
// The file holds a PEM block of type "ICN AGENT ATTESTATION KEY" whose
// content is, in SSH wire encoding (uint32 big-endian integers, strings
// prefixed by a uint32 length): string "icn-agent-attestation-key", uint32
// version (1), string SRK Name, string TPM2B_PUBLIC, string TPM2B_PRIVATE.
// Nothing in it is secret: the private area is encrypted to the SRK and
// usable only inside the TPM that created it.
func LoadOrCreateAK(ctx context.Context, t TPM, path string) (*AK, error) {
	if ak, err := readAKFile(path); !errors.Is(err, fs.ErrNotExist) {
		return ak, err
	}
	ak, err := createAK(ctx, t)
	if err != nil {
		return nil, err
	}
	err = writeNewFile(path, ak.marshalFile())
	if errors.Is(err, fs.ErrExist) {
		// Another process created the key first: use theirs. Ours was
		// never loaded and needs no cleanup.
		return readAKFile(path)
	}
	if err != nil {
		return nil, err
	}
	return ak, nil
}

// createAK creates a new attestation key under the SRK.
func createAK(ctx context.Context, t TPM) (*AK, error) {
	var ak *AK
	err := t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		rsp, err := tpm2.Create{
			ParentHandle: srk.AuthHandle(),
			InPublic:     tpm2.New2B(attest.AKTemplate()),
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("create attestation key: %w", err)
		}
		ak, err = newAK(bytes.Clone(srk.Name.Buffer), tpm2.Marshal(rsp.OutPublic), tpm2.Marshal(rsp.OutPrivate))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attesttpm: %w", err)
	}
	return ak, nil
}

// newAK checks the parts of an attestation key and assembles it.
func newAK(srkName, public, private []byte) (*AK, error) {
	if len(srkName) != nameSize || binary.BigEndian.Uint16(srkName) != uint16(tpm2.TPMAlgSHA256) {
		return nil, fmt.Errorf("attesttpm: attestation key: SRK name is not a SHA-256 TPM name")
	}
	key, name, err := attest.ParseAKPublic(public)
	if err != nil {
		return nil, fmt.Errorf("attesttpm: attestation key: %w", err)
	}
	if len(private) < 3 || len(private) > maxTPM2BPriv || int(binary.BigEndian.Uint16(private)) != len(private)-2 {
		return nil, fmt.Errorf("attesttpm: attestation key: private area is not a TPM2B_PRIVATE")
	}
	return &AK{srkName: srkName, public: public, private: private, name: name, key: key}, nil
}

// readString reads an SSH string (uint32 length, then the bytes) of at
// most max bytes into out, as a copy.
func readString(s *cryptobyte.String, out *[]byte, max int) bool {
	var n uint32
	var b []byte
	if !s.ReadUint32(&n) || n > uint32(max) || !s.ReadBytes(&b, int(n)) {
		return false
	}
	*out = bytes.Clone(b)
	return true
}

// appendString appends b as an SSH string.
func appendString(w, b []byte) []byte {
	w = binary.BigEndian.AppendUint32(w, uint32(len(b)))
	return append(w, b...)
}

func (a *AK) marshalFile() []byte {
	var w []byte
	w = appendString(w, []byte(akMagic))
	w = binary.BigEndian.AppendUint32(w, akFileVersion)
	w = appendString(w, a.srkName)
	w = appendString(w, a.public)
	w = appendString(w, a.private)
	return pem.EncodeToMemory(&pem.Block{Type: akPEMType, Bytes: w})
}

// readAKFile reads and checks an attestation key file. A missing file is
// reported with an error wrapping fs.ErrNotExist.
//
// The file is read through safefile: a FIFO or device at path is refused
// at once (it would block the command or never end), and so is a symbolic
// link (safefile.ErrSymlink), since icn-agent writes this file itself and
// never links it; a link there was put by someone else.
func readAKFile(path string) (*AK, error) {
	data, err := safefile.ReadWith(path, maxAKFile, safefile.Options{NoFollow: true})
	if err != nil {
		return nil, fmt.Errorf("attesttpm: read attestation key: %w", err)
	}
	ak, err := parseAKFile(data)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return ak, nil
}

func parseAKFile(data []byte) (*AK, error) {
	if len(data) > maxAKFile {
		return nil, fmt.Errorf("attesttpm: attestation key file is larger than %d bytes", maxAKFile)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != akPEMType || len(block.Headers) != 0 || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("attesttpm: not an attestation key file (want one PEM block %q)", akPEMType)
	}
	r := cryptobyte.String(block.Bytes)
	bad := func(field string) error {
		return fmt.Errorf("attesttpm: malformed attestation key file: %s: truncated or too long", field)
	}
	var magic, srkName, public, private []byte
	var v uint32
	if !readString(&r, &magic, 64) {
		return nil, bad("magic")
	}
	if string(magic) != akMagic {
		return nil, fmt.Errorf("attesttpm: not an attestation key file")
	}
	if !r.ReadUint32(&v) {
		return nil, bad("version")
	}
	if v != akFileVersion {
		return nil, fmt.Errorf("attesttpm: attestation key file version %d, this icn-agent reads %d", v, akFileVersion)
	}
	if !readString(&r, &srkName, maxName) {
		return nil, bad("srk name")
	}
	if !readString(&r, &public, maxTPM2BPub) {
		return nil, bad("public")
	}
	if !readString(&r, &private, maxTPM2BPriv) {
		return nil, bad("private")
	}
	if !r.Empty() {
		return nil, fmt.Errorf("attesttpm: malformed attestation key file: %d trailing bytes", len(r))
	}
	return newAK(srkName, public, private)
}

// writeNewFile writes data to path, which must not exist, atomically: a
// temporary file in the same directory is written, synced and hard-linked
// to path (link fails if path exists, so nothing is ever overwritten), and
// the directory is synced. The error wraps fs.ErrExist if path exists.
func writeNewFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("attesttpm: write attestation key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ak-*.tmp")
	if err != nil {
		return fmt.Errorf("attesttpm: write attestation key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("attesttpm: write attestation key: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("attesttpm: write attestation key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("attesttpm: write attestation key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("attesttpm: write attestation key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("attesttpm: write attestation key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Public returns the attestation key's public key, an *ecdsa.PublicKey.
func (a *AK) Public() crypto.PublicKey { return a.key }

// Name returns the attestation key's TPM Name (the contents of its
// TPM2B_NAME: TPM_ALG_SHA256 followed by the SHA-256 of its public area),
// 34 bytes. It identifies the key; attest.VerifyOptions.TrustedAKName pins it.
func (a *AK) Name() []byte { return bytes.Clone(a.name) }

// PublicPEM returns the attestation key's public key as a PKIX "PUBLIC KEY"
// PEM block, the form tpm2_checkquote -u and openssl read.
func (a *AK) PublicPEM() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(a.key)
	if err != nil {
		return nil, fmt.Errorf("attesttpm: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// PinFile returns what a verifier pins the attestation key with (icn-agent
// ak prints it): a "# name HEX" line with its TPM Name, for
// VerifyOptions.TrustedAKName, then its PublicPEM, which
// attest.ParsePEMPublicKey reads for VerifyOptions.TrustedAK.
func (a *AK) PinFile() ([]byte, error) {
	p, err := a.PublicPEM()
	if err != nil {
		return nil, err
	}
	return append([]byte("# name "+hex.EncodeToString(a.name)+"\n"), p...), nil
}

// Unload flushes the attestation key from the TPM if it is loaded. It is
// optional (a process's transient objects die with its TPM connection on
// a kernel resource manager; tpmdev flushes leftovers on swtpm); the next
// Quote loads the key again.
func (a *AK) Unload(ctx context.Context, t TPM) error {
	return t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.handle == 0 {
			return nil
		}
		h := a.handle
		a.handle = 0
		// Flush only if the handle still holds our key: after a reset
		// the number may belong to another object.
		rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tpm)
		if err != nil || !bytes.Equal(rp.Name.Buffer, a.name) {
			return nil
		}
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tpm); err != nil {
			return fmt.Errorf("attesttpm: unload attestation key: %v", err)
		}
		return nil
	})
}

// loadedLocked returns the attestation key as a signing handle, loading it
// under srk if it is not loaded. A handle that no longer holds the key (the
// TPM was reset, or another client flushed it) is noticed by comparing
// names and the key is loaded again. a.mu must be held.
func (a *AK) loadedLocked(tpm transport.TPM, srk *tpmdev.SRK) (tpm2.AuthHandle, error) {
	if !bytes.Equal(srk.Name.Buffer, a.srkName) {
		return tpm2.AuthHandle{}, fmt.Errorf("%w: the key's SRK is %x, this TPM's SRK is %x; remove the attestation key file to create a new key (verifiers must then pin the new one)", ErrAKWrongTPM, a.srkName, srk.Name.Buffer)
	}
	if a.handle != 0 {
		rp, err := tpm2.ReadPublic{ObjectHandle: a.handle}.Execute(tpm)
		switch {
		case err == nil && bytes.Equal(rp.Name.Buffer, a.name):
			return a.authHandle(), nil
		case err != nil && !tpmdev.IsStaleHandle(err):
			return tpm2.AuthHandle{}, fmt.Errorf("read attestation key: %w", err)
		}
		a.handle = 0 // not ours any more: do not flush it
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](a.public)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("attestation key public area: %v", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](a.private)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("attestation key private area: %v", err)
	}
	rsp, err := tpm2.Load{ParentHandle: srk.AuthHandle(), InPrivate: *priv, InPublic: *pub}.Execute(tpm)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("load attestation key: %w", err)
	}
	if !bytes.Equal(rsp.Name.Buffer, a.name) {
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm)
		return tpm2.AuthHandle{}, fmt.Errorf("load attestation key: TPM reports name %x, want %x", rsp.Name.Buffer, a.name)
	}
	a.handle = rsp.ObjectHandle
	return a.authHandle(), nil
}

func (a *AK) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: a.handle, Name: tpm2.TPM2BName{Buffer: a.name}, Auth: tpm2.PasswordAuth(nil)}
}

// akCommandError reports the failure of a command that uses the loaded
// attestation key. A stale-handle response code is not wrapped: RunWithSRK
// would take it for a stale SRK and create another. The AK's handle is
// kept: loadedLocked checks it by name before the next use and loads the
// key again only if it is really gone, so a loaded key is never leaked.
func (a *AK) akCommandError(op string, err error) error {
	if tpmdev.IsStaleHandle(err) {
		return fmt.Errorf("%s: attestation key is no longer loaded: %v", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
