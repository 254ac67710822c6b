package sealstore

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmpolicy"
)

// The files of signed PCR policies, as people keep them:
//
//   - a policy key's public half: a PKIX PEM "PUBLIC KEY" file
//     ([ReadPolicyKeyFile]; [PolicyKey.PEM] writes it);
//   - its private half: a PKCS#8 "PRIVATE KEY" or SEC 1 "EC PRIVATE KEY"
//     PEM file of an ECDSA P-256 key ([ReadPolicySigningKeyFile];
//     [NewPolicySigningKey] makes one);
//   - PCR values to sign: lines "N=HEX", HEX the 64-digit SHA-256 value
//     of PCR N, with blank lines and #-comments ignored; tpm2_pcrread's
//     "N: 0xHEX" lines under "sha256:" are accepted too
//     ([ParsePCRValues], [ReadPCRValuesFile]). [FormatPCRValues] writes
//     the same "N=HEX" form.
//
// Errors name the file and wrap one of the sentinels below, so that a
// caller can add what to do about them.

// MaxPolicyFile bounds what the readers below read: a PEM key is a few
// hundred bytes, a list of 24 PCR values about 2 KiB.
const MaxPolicyFile = 64 << 10

var (
	// ErrPrivatePolicyKey means a file given as a policy key's public
	// half holds a private key.
	ErrPrivatePolicyKey = errors.New("sealstore: a private key where a policy key's public half belongs")
	// ErrPublicPolicyKey means a file given as a policy signing key holds
	// only a public key.
	ErrPublicPolicyKey = errors.New("sealstore: a public key where a policy signing key belongs")
	// ErrNoPEM means a key file holds no PEM block.
	ErrNoPEM = errors.New("sealstore: no PEM block")
	// ErrPCRValues is wrapped by every error about a malformed PCR values
	// file.
	ErrPCRValues = errors.New("sealstore: malformed PCR values")
)

// policyFileError is an error whose message is complete as it is, matching kind
// with errors.Is.
type policyFileError struct {
	msg  string
	kind error
}

func (e *policyFileError) Error() string { return e.msg }
func (e *policyFileError) Unwrap() error { return e.kind }

func policyFileErrorf(kind error, format string, args ...any) error {
	return &policyFileError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// ReadPolicyKeyFile reads the public half of a policy key from a PEM file.
// A file holding a private key is refused, wiped, with an error wrapping
// ErrPrivatePolicyKey; one that is not a policy key gives an error naming
// path and wrapping ErrNotPolicyKey.
func ReadPolicyKeyFile(path string) (*PolicyKey, error) {
	data, err := safefile.Read(path, MaxPolicyFile)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		secmem.Wipe(data)
		return nil, policyFileErrorf(ErrPrivatePolicyKey, "%s is a private key", path)
	}
	key, err := ParsePolicyKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// ReadPolicySigningKeyFile reads a policy signing key (the private half):
// PKCS#8 or SEC 1 PEM, ECDSA P-256. The file and the key's encoding are
// read in locked memory and wiped. Errors name path and wrap ErrNoPEM,
// ErrPublicPolicyKey or ErrNotPolicyKey, or are the x509 parser's.
func ReadPolicySigningKeyFile(path string) (*ecdsa.PrivateKey, error) {
	buf, err := secmem.New(MaxPolicyFile)
	if err != nil {
		return nil, err
	}
	defer buf.Destroy()
	n, err := safefile.ReadInto(path, buf.Bytes(), safefile.Options{})
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(buf.Bytes()[:n])
	if block == nil {
		return nil, policyFileErrorf(ErrNoPEM, "%s is not a PEM private key", path)
	}
	defer secmem.Wipe(block.Bytes)
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PUBLIC KEY":
		return nil, policyFileErrorf(ErrPublicPolicyKey, "%s is a public key", path)
	default:
		return nil, fmt.Errorf("%s holds a PEM %q block, not a policy signing key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, policyFileErrorf(ErrNotPolicyKey, "%s is not an ECDSA P-256 key", path)
	}
	return ec, nil
}

// NewPolicySigningKey generates a policy signing key. It returns the key's
// public half and its private half as PKCS#8 PEM, which the caller writes
// (mode 0600, somewhere offline) and wipes.
func NewPolicySigningKey() (*PolicyKey, []byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate policy key: %w", err)
	}
	key, err := NewPolicyKey(&priv.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode policy key: %w", err)
	}
	defer secmem.Wipe(der)
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ReadPCRValuesFile reads PCR values from the file at path (see
// ParsePCRValues); errors name the file and its line.
func ReadPCRValuesFile(path string) ([]PCRValue, error) {
	data, err := safefile.Read(path, MaxPolicyFile)
	if err != nil {
		return nil, err
	}
	return ParsePCRValues(path, data)
}

// ParsePCRValues parses "N=HEX" lines (or tpm2_pcrread's "N: 0xHEX") into
// PCR values sorted by index. Each PCR may be given once; at least one
// must be. Errors begin with name and the line number, and wrap
// ErrPCRValues.
func ParsePCRValues(name string, data []byte) ([]PCRValue, error) {
	var out []PCRValue
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasSuffix(line, ":") {
			continue // blank, comment, or tpm2_pcrread's "sha256:"
		}
		idxText, hexText, ok := strings.Cut(line, "=")
		if !ok {
			idxText, hexText, ok = strings.Cut(line, ":")
		}
		idx, err := strconv.Atoi(strings.TrimSpace(idxText))
		if !ok || err != nil || idx < 0 || idx >= tpmpolicy.NumPCRs {
			return nil, policyFileErrorf(ErrPCRValues, "%s:%d: want N=HEX with N a PCR 0-%d and HEX its 64-digit SHA-256 value, got %q", name, n, tpmpolicy.NumPCRs-1, truncate(line, 80))
		}
		hexText = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(hexText), "0x"), "0X")
		v, err := hex.DecodeString(hexText)
		if err != nil || len(v) != 32 {
			return nil, policyFileErrorf(ErrPCRValues, "%s:%d: PCR %d: want 64 hex digits (a SHA-256 value)", name, n, idx)
		}
		if slices.ContainsFunc(out, func(p PCRValue) bool { return p.Index == idx }) {
			return nil, policyFileErrorf(ErrPCRValues, "%s:%d: PCR %d given twice", name, n, idx)
		}
		out = append(out, PCRValue{Index: idx, Value: v})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, policyFileErrorf(ErrPCRValues, "%s has no PCR values: want N=HEX lines, such as those an unseal error prints", name)
	}
	slices.SortFunc(out, func(a, b PCRValue) int { return a.Index - b.Index })
	return out, nil
}
