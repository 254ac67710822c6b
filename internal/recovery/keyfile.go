package recovery

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
)

// Importing an existing key: ReadEd25519Seed reads an Ed25519 private key
// as OpenSSH and other tools keep it, and returns only its 32-byte seed,
// in locked memory:
//
//   - an OpenSSH private key ("-----BEGIN OPENSSH PRIVATE KEY-----", as
//     ssh-keygen -t ed25519 writes it), in the clear or encrypted with a
//     passphrase;
//   - a PKCS#8 PEM key ("-----BEGIN PRIVATE KEY-----", as openssl
//     genpkey -algorithm ed25519 writes it);
//   - either of them age-encrypted, as the software keystore before
//     icn-agent kept them.
//
// The file and every decoded copy of the key this package handles are in
// locked memory or wiped once read; the SSH parser's own copies of the
// private key are wiped too, but its scratch buffers are beyond reach.

// MaxKeyFile bounds a key file: an OpenSSH Ed25519 key is about 400
// bytes.
const MaxKeyFile = 64 << 10

var (
	// ErrNotPrivateKey means a key file is not a private key any parser
	// knows.
	ErrNotPrivateKey = errors.New("recovery: not an OpenSSH private key")
	// ErrNotEd25519 means a key file holds a key of another type.
	ErrNotEd25519 = errors.New("recovery: not an Ed25519 key")
	// ErrBackupNotKey means an age-encrypted key file is an icn-agent
	// backup (see Backup), to be restored rather than imported.
	ErrBackupNotKey = errors.New("recovery: an icn-agent backup, not a key")
)

// keyFileError is an error whose message is complete as it is, matching
// kind with errors.Is.
type keyFileError struct {
	msg  string
	kind error
}

func (e *keyFileError) Error() string { return e.msg }
func (e *keyFileError) Unwrap() error { return e.kind }

// DecryptError is ReadEd25519Seed's error when an age-encrypted key file
// does not decrypt; Err is Decrypt's error (ErrWrongPassphrase,
// *NoMatchError, ...), and the message is Err's.
type DecryptError struct{ Err error }

func (e *DecryptError) Error() string { return e.Err.Error() }
func (e *DecryptError) Unwrap() error { return e.Err }

// KeyFileOptions say how to open a protected key file. Each function is
// called only when the file turns out to need it; a nil one makes such a
// file fail to open.
type KeyFileOptions struct {
	// Keys returns the keys to decrypt an age-encrypted file with.
	Keys func() (*Keys, error)
	// Passphrase returns the passphrase of a passphrase-protected
	// OpenSSH key; it is wiped after use. Its errors are returned as
	// they are.
	Passphrase func() ([]byte, error)
}

// ReadEd25519Seed reads the Ed25519 private key in the file at path (see
// above) and returns its seed in locked memory, which the caller
// destroys. Errors name the file and wrap ErrNotPrivateKey,
// ErrNotEd25519, ErrBackupNotKey or ErrWrongPassphrase (of the key's own
// passphrase), or are a *DecryptError, or the errors of reading the file
// and of opts' functions.
func ReadEd25519Seed(path string, opts KeyFileOptions) (*secmem.Buffer, error) {
	keyBuf, err := secmem.New(MaxKeyFile)
	if err != nil {
		return nil, err
	}
	defer keyBuf.Destroy()
	n, err := safefile.ReadInto(path, keyBuf.Bytes(), safefile.Options{})
	if err != nil {
		return nil, err
	}
	data := keyBuf.Bytes()[:n]
	if IsAgeEncrypted(data) {
		if opts.Keys == nil {
			return nil, &DecryptError{ErrNotAge}
		}
		keys, err := opts.Keys()
		if err != nil {
			return nil, err
		}
		plain, err := Decrypt(data, keys, MaxKeyFile)
		if err != nil {
			return nil, &DecryptError{err}
		}
		defer plain.Destroy()
		if IsBackup(plain.Bytes()) {
			return nil, &keyFileError{fmt.Sprintf("%s is an icn-agent backup, not a key", path), ErrBackupNotKey}
		}
		data = plain.Bytes()
	}
	key, err := ssh.ParseRawPrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) && opts.Passphrase != nil {
		pass, perr := opts.Passphrase()
		if perr != nil {
			return nil, perr
		}
		key, err = ssh.ParseRawPrivateKeyWithPassphrase(data, pass)
		secmem.Wipe(pass)
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, &keyFileError{fmt.Sprintf("wrong passphrase for %s", path), ErrWrongPassphrase}
		}
	}
	if err != nil {
		return nil, &keyFileError{fmt.Sprintf("%s is not an OpenSSH private key (%v)", path, err), ErrNotPrivateKey}
	}
	var priv ed25519.PrivateKey
	switch k := key.(type) {
	case ed25519.PrivateKey:
		priv = k
	case *ed25519.PrivateKey:
		priv = *k
	default:
		return nil, &keyFileError{fmt.Sprintf("%s holds a %s key", path, privateKeyType(key)), ErrNotEd25519}
	}
	defer secmem.Wipe(priv)
	buf, err := secmem.New(sealstore.SeedSize)
	if err != nil {
		return nil, err
	}
	copy(buf.Bytes(), priv[:ed25519.SeedSize]) // not priv.Seed(): that is a copy nobody wipes
	return buf, nil
}

// privateKeyType names the type of a parsed private key.
func privateKeyType(key any) string {
	s := fmt.Sprintf("%T", key)
	switch {
	case strings.Contains(s, "rsa"):
		return "RSA"
	case strings.Contains(s, "ecdsa"):
		return "ECDSA"
	case strings.Contains(s, "dsa"):
		return "DSA"
	}
	return s
}

// PublicKeyComment returns the comment of the authorized_keys line in the
// file at path (the KEY.pub that ssh-keygen writes beside KEY) if that
// line is the public key of seed, and "" otherwise: a comment is never
// taken from another key's file.
func PublicKeyComment(path string, seed []byte) string {
	data, err := safefile.Read(path, MaxKeyFile)
	if err != nil {
		return ""
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return ""
	}
	want, err := sealstore.PublicKey(seed)
	if err != nil || !bytes.Equal(pub.Marshal(), want.Marshal()) {
		return ""
	}
	return comment
}

// RecipientKinds names, in words and in the order of the file's stanzas,
// the kinds of recipient an age file that nothing could decrypt is
// encrypted to: "an age key or a passphrase".
func (e *NoMatchError) RecipientKinds() string {
	seen := map[string]bool{}
	var out []string
	for _, t := range e.StanzaTypes {
		name := map[string]string{
			"X25519":         "an age key",
			"mlkem768x25519": "an age post-quantum key",
			"ssh-ed25519":    "an SSH Ed25519 key",
			"ssh-rsa":        "an SSH RSA key",
			"scrypt":         "a passphrase",
		}[t]
		if name == "" {
			name = "a " + t + " recipient"
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return strings.Join(out, " or ")
}
