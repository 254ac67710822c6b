// Package didkey writes and reads the did:key form of Ed25519 public keys
// (https://w3c-ccg.github.io/did-method-key/): "did:key:z" followed by the
// base58btc encoding of the multicodec prefix 0xed 0x01 and the 32-byte key.
// ICN names identities this way; icn-agent shows it beside the SSH form.
package didkey

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

const (
	prefix   = "did:key:z"
	alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
)

// multicodec varint of ed25519-pub (0xed).
var edPrefix = []byte{0xed, 0x01}

// Encode returns the did:key of an Ed25519 public key.
func Encode(pub ed25519.PublicKey) string {
	return prefix + base58Encode(append(append([]byte{}, edPrefix...), pub...))
}

// ErrNotEd25519 means a did:key is well formed but not an Ed25519 key.
var ErrNotEd25519 = errors.New("didkey: not an Ed25519 did:key")

// Decode parses an Ed25519 did:key.
func Decode(did string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(did, prefix)
	if !ok {
		return nil, fmt.Errorf("didkey: %q does not start with %q", did, prefix)
	}
	raw, err := base58Decode(rest)
	if err != nil {
		return nil, err
	}
	if len(raw) != 2+ed25519.PublicKeySize || raw[0] != edPrefix[0] || raw[1] != edPrefix[1] {
		return nil, ErrNotEd25519
	}
	return ed25519.PublicKey(raw[2:]), nil
}

func base58Encode(b []byte) string {
	zeros := 0
	for zeros < len(b) && b[zeros] == 0 {
		zeros++
	}
	n := new(big.Int).SetBytes(b)
	var out []byte
	base, mod := big.NewInt(58), new(big.Int)
	for n.Sign() > 0 {
		n.DivMod(n, base, mod)
		out = append(out, alphabet[mod.Int64()])
	}
	for i := 0; i < zeros; i++ {
		out = append(out, alphabet[0])
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return string(out)
}

func base58Decode(s string) ([]byte, error) {
	if s == "" || len(s) > 128 {
		return nil, errors.New("didkey: bad base58 length")
	}
	n := new(big.Int)
	base := big.NewInt(58)
	zeros := 0
	for zeros < len(s) && s[zeros] == alphabet[0] {
		zeros++
	}
	for _, c := range []byte(s) {
		i := strings.IndexByte(alphabet, c)
		if i < 0 {
			return nil, fmt.Errorf("didkey: %q is not a base58 character", c)
		}
		n.Mul(n, base)
		n.Add(n, big.NewInt(int64(i)))
	}
	return append(make([]byte, zeros), n.Bytes()...), nil
}
