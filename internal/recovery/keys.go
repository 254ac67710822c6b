package recovery

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/secmem"
)

// DefaultScryptWorkFactor is the scrypt work factor (log2 N) of passphrase
// recipients: age's default, about a second and 256 MiB to derive the key.
const DefaultScryptWorkFactor = 18

// maxKeysFile bounds a recipients or identity file.
const maxKeysFile = 1 << 20

var (
	// ErrWrongPassphrase means a passphrase-encrypted file does not
	// decrypt with the passphrase given.
	ErrWrongPassphrase = errors.New("recovery: wrong passphrase")
	// ErrEmptyPassphrase means an empty passphrase was given.
	ErrEmptyPassphrase = errors.New("recovery: empty passphrase")
)

// NoMatchError means none of the keys given can decrypt a file. It says
// what the file is encrypted to, so that the user can find the right key.
type NoMatchError struct {
	// StanzaTypes are the kinds of recipient the file is encrypted to, as
	// age names them: "X25519", "mlkem768x25519", "ssh-ed25519",
	// "ssh-rsa", "scrypt".
	StanzaTypes []string
	// Identities is how many identities were tried.
	Identities int
}

func (e *NoMatchError) Error() string {
	kinds := slices.Compact(slices.Sorted(slices.Values(e.StanzaTypes)))
	if e.Identities == 0 {
		return fmt.Sprintf("recovery: encrypted to %s recipients, and no identity was given", strings.Join(kinds, ", "))
	}
	return fmt.Sprintf("recovery: encrypted to %s recipients, and none of the %d identities given matches", strings.Join(kinds, ", "), e.Identities)
}

// PassphraseEncrypted reports whether the file is encrypted to a
// passphrase (and so needs no identity).
func (e *NoMatchError) PassphraseEncrypted() bool {
	return slices.Contains(e.StanzaTypes, "scrypt")
}

// Keys are what may decrypt an age file.
type Keys struct {
	// Identities are age identities (see ParseIdentities): age keys and
	// SSH private keys.
	Identities []age.Identity
	// Passphrase, if not nil, is called when the file turns out to be
	// passphrase-encrypted, and only then; it returns the passphrase,
	// which is wiped after use. A nil Passphrase or an error from it
	// makes such a file fail to decrypt.
	Passphrase func() ([]byte, error)
}

// identities returns k as age identities: Identities, then one that asks
// for the passphrase when the file is passphrase-encrypted.
func (k *Keys) identities() []age.Identity {
	ids := slices.Clone(k.Identities)
	if k.Passphrase != nil {
		ids = append(ids, &passphraseIdentity{get: k.Passphrase})
	}
	return ids
}

// passphraseIdentity is an age identity for passphrase-encrypted files that
// asks for the passphrase only when it sees an scrypt stanza, and reports a
// wrong one as ErrWrongPassphrase rather than as "no identity matched".
type passphraseIdentity struct {
	get func() ([]byte, error)
}

func (p *passphraseIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	if !slices.ContainsFunc(stanzas, func(s *age.Stanza) bool { return s.Type == "scrypt" }) {
		return nil, age.ErrIncorrectIdentity
	}
	pass, err := p.get()
	if err != nil {
		return nil, &passphraseSourceError{err}
	}
	defer secmem.Wipe(pass)
	if len(pass) == 0 {
		return nil, ErrEmptyPassphrase
	}
	// age keeps its own copy of the passphrase: the API takes a string.
	id, err := age.NewScryptIdentity(string(pass))
	if err != nil {
		return nil, err
	}
	key, err := id.Unwrap(stanzas)
	if errors.Is(err, age.ErrIncorrectIdentity) {
		return nil, ErrWrongPassphrase
	}
	return key, err
}

// passphraseSourceError carries an error from Keys.Passphrase (no
// terminal, unreadable file) through age.Decrypt unchanged.
type passphraseSourceError struct{ err error }

func (e *passphraseSourceError) Error() string { return e.err.Error() }
func (e *passphraseSourceError) Unwrap() error { return e.err }

// PassphraseRecipient returns an age recipient for passphrase encryption
// (scrypt, work factor 2^logN; 0 means DefaultScryptWorkFactor). age
// encrypts a file to a passphrase recipient alone, never together with
// others.
func PassphraseRecipient(pass []byte, logN int) (age.Recipient, error) {
	if len(pass) == 0 {
		return nil, ErrEmptyPassphrase
	}
	if logN == 0 {
		logN = DefaultScryptWorkFactor
	}
	if logN < 1 || logN > 22 {
		return nil, fmt.Errorf("recovery: scrypt work factor %d out of range 1 to 22", logN)
	}
	r, err := age.NewScryptRecipient(string(pass))
	if err != nil {
		return nil, err
	}
	r.SetWorkFactor(logN)
	return r, nil
}

// ParseRecipient parses one recipient: an age public key ("age1..." or the
// post-quantum "age1pq1...") or an SSH public key line ("ssh-ed25519 AAAA...
// comment" or "ssh-rsa ...", as in authorized_keys or a .pub file).
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "age1pq1"):
		r, err := age.ParseHybridRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("recovery: bad age recipient %q: %v", truncate(s, 24), err)
		}
		return r, nil
	case strings.HasPrefix(s, "age1"):
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("recovery: bad age recipient %q: %v", truncate(s, 24), err)
		}
		return r, nil
	case strings.HasPrefix(s, "ssh-"):
		r, err := agessh.ParseRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("recovery: bad SSH recipient %q: %v", truncate(s, 40), err)
		}
		return r, nil
	case strings.HasPrefix(s, "ecdsa-") || strings.HasPrefix(s, "sk-"):
		return nil, fmt.Errorf("recovery: age cannot encrypt to %s keys; use an ssh-ed25519 or ssh-rsa key, or an age key", strings.Fields(s)[0])
	case strings.HasPrefix(s, "AGE-SECRET-KEY-"):
		// Never echo a secret key.
		return nil, errors.New("recovery: that is an age secret key, not a recipient; give its public key (age-keygen -y prints it)")
	}
	return nil, fmt.Errorf("recovery: %q is not a recipient: want age1..., or an SSH public key line such as ssh-ed25519 AAAA...", truncate(s, 24))
}

// ParseRecipients parses the value of a --recipient flag: one recipient
// (see ParseRecipient) or, if arg is none, the name of a file with one
// recipient per line (blank lines and lines starting with "#" are skipped),
// such as an age recipients file or an SSH .pub or authorized_keys file.
func ParseRecipients(arg string) ([]age.Recipient, error) {
	if looksLikeRecipient(arg) {
		r, err := ParseRecipient(arg)
		if err != nil {
			return nil, err
		}
		return []age.Recipient{r}, nil
	}
	data, err := ReadFileLimited(arg, maxKeysFile)
	if err != nil {
		return nil, fmt.Errorf("recovery: recipient %q is neither a public key nor a readable file: %w", truncate(arg, 40), err)
	}
	var out []age.Recipient
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxKeysFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r, err := ParseRecipient(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", arg, n, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("recovery: read %s: %w", arg, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("recovery: %s holds no recipients", arg)
	}
	return out, nil
}

// looksLikeRecipient tells a key given on the command line from a file
// name.
func looksLikeRecipient(s string) bool {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "age1") || strings.HasPrefix(s, "AGE-SECRET-KEY-") {
		return true
	}
	// An SSH public key line: "TYPE BASE64 [comment]".
	f := strings.Fields(s)
	return len(f) >= 2 && (strings.HasPrefix(f[0], "ssh-") || strings.HasPrefix(f[0], "ecdsa-") || strings.HasPrefix(f[0], "sk-"))
}

// ParseIdentities parses an identity file given with -i: an age identity
// file (lines "AGE-SECRET-KEY-1...", blank lines and "#" comments allowed),
// or an OpenSSH Ed25519 or RSA private key. For an encrypted SSH key,
// passphrase is called when a file to decrypt turns out to be encrypted to
// it; a nil passphrase makes such a key an error now. Error messages never
// include the file's content.
func ParseIdentities(name string, data []byte, passphrase func() ([]byte, error)) ([]age.Identity, error) {
	trimmed := bytes.TrimSpace(data)
	switch {
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN ")):
		id, err := agessh.ParseIdentity(trimmed)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			if missing.PublicKey == nil {
				return nil, fmt.Errorf("recovery: %s is an encrypted SSH key in an old format without its public key; convert it with ssh-keygen -p -f %s", name, name)
			}
			if passphrase == nil {
				return nil, fmt.Errorf("recovery: %s is an encrypted SSH key and no passphrase can be asked for", name)
			}
			id, err = agessh.NewEncryptedSSHIdentity(missing.PublicKey, bytes.Clone(trimmed), passphrase)
		}
		if err != nil {
			return nil, fmt.Errorf("recovery: %s: not a usable SSH private key: %v", name, err)
		}
		return []age.Identity{id}, nil
	case bytes.Contains(data, []byte("AGE-SECRET-KEY-")):
		ids, err := age.ParseIdentities(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("recovery: %s: %v", name, err)
		}
		return ids, nil
	case bytes.HasPrefix(trimmed, []byte("AGE-PLUGIN-")):
		return nil, fmt.Errorf("recovery: %s holds an age plugin identity; icn-agent does not run age plugins", name)
	}
	return nil, fmt.Errorf("recovery: %s is not an identity file: want an age identity (AGE-SECRET-KEY-1...) or an OpenSSH private key", name)
}

// decrypt decrypts the age file in data (binary or armored) with keys and
// returns its plaintext, at most max bytes, in locked memory.
func decrypt(data []byte, keys *Keys, max int) (*secmem.Buffer, error) {
	r, err := ageReader(data)
	if err != nil {
		return nil, err
	}
	ids := keys.identities()
	if len(ids) == 0 {
		// Learn what the file is encrypted to, for the error.
		ids = []age.Identity{noIdentity{}}
	}
	pr, err := age.Decrypt(r, ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, &NoMatchError{StanzaTypes: nm.StanzaTypes, Identities: len(keys.Identities)}
		}
		var pe *passphraseSourceError
		if errors.As(err, &pe) {
			return nil, pe.err
		}
		if errors.Is(err, ErrWrongPassphrase) || errors.Is(err, ErrEmptyPassphrase) {
			return nil, err
		}
		return nil, fmt.Errorf("recovery: decrypt: %w", err)
	}
	buf, err := secmem.New(max + 1)
	if err != nil {
		return nil, err
	}
	defer buf.Destroy()
	n, err := io.ReadFull(pr, buf.Bytes())
	switch {
	case err == nil:
		return nil, fmt.Errorf("recovery: decrypted content is larger than %d bytes", max)
	case !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF):
		// The payload is authenticated chunk by chunk: a damaged file
		// fails here.
		return nil, fmt.Errorf("recovery: decrypt: %w", err)
	case n == 0:
		return nil, errors.New("recovery: the encrypted file is empty")
	}
	out, err := secmem.New(n)
	if err != nil {
		return nil, err
	}
	copy(out.Bytes(), buf.Bytes()[:n])
	return out, nil
}

// Decrypt decrypts the age file in data (binary or ASCII-armored) with keys
// and returns its plaintext in locked memory; the caller destroys it.
// Plaintexts larger than max bytes are refused. Errors: ErrNotAge,
// ErrWrongPassphrase, ErrEmptyPassphrase, *NoMatchError, or an error about
// a damaged file.
func Decrypt(data []byte, keys *Keys, max int) (*secmem.Buffer, error) {
	if max <= 0 || max >= secmem.MaxSize {
		return nil, fmt.Errorf("recovery: decrypt limit %d out of range", max)
	}
	return decrypt(data, keys, max)
}

// noIdentity matches nothing; decrypting with it only reveals the kinds of
// recipient a file has.
type noIdentity struct{}

func (noIdentity) Unwrap([]*age.Stanza) ([]byte, error) { return nil, age.ErrIncorrectIdentity }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
