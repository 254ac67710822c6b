package agentsrv

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/edlocked"
	"github.com/icn/icn-agent/internal/secmem"
)

// edSigner is a software Ed25519 key (ssh-add) held like a sealed
// identity's seed: in a locked secmem buffer laid out as seed || public
// key, signed over with edlocked.Sign.
type edSigner struct {
	pub ssh.PublicKey

	mu  sync.RWMutex // held for reading while signing; destroy takes it
	key *secmem.Buffer
}

// newEdSigner copies priv (seed || public key, 64 bytes) into locked
// memory, after checking that pub is both priv's second half and the
// public key of its seed. It returns the signer and the function that
// destroys its buffer.
func newEdSigner(pub, priv []byte) (ssh.Signer, func(), error) {
	if len(pub) != ed25519.PublicKeySize || len(priv) != ed25519.PrivateKeySize {
		return nil, nil, fmt.Errorf("ed25519 key of %d+%d bytes, want %d+%d", len(pub), len(priv), ed25519.PublicKeySize, ed25519.PrivateKeySize)
	}
	var derived [ed25519.PublicKeySize]byte
	edlocked.PublicKey(&derived, priv[:ed25519.SeedSize])
	if string(derived[:]) != string(pub) || string(priv[ed25519.SeedSize:]) != string(pub) {
		return nil, nil, fmt.Errorf("%w (ed25519)", ErrKeyMismatch)
	}
	sshPub, err := ssh.NewPublicKey(ed25519.PublicKey(derived[:]))
	if err != nil {
		return nil, nil, err
	}
	buf, err := secmem.New(ed25519.PrivateKeySize)
	if err != nil {
		return nil, nil, err
	}
	copy(buf.Bytes(), priv)
	k := &edSigner{pub: sshPub, key: buf}
	return k, k.destroy, nil
}

func (k *edSigner) PublicKey() ssh.PublicKey { return k.pub }

// Sign signs data; the random source is not used (Ed25519 is
// deterministic).
func (k *edSigner) Sign(_ io.Reader, data []byte) (*ssh.Signature, error) {
	b := new(sigBox)
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.key == nil {
		return nil, fmt.Errorf("%w: key was removed", ErrNotFound)
	}
	edlocked.Sign(&b.blob, k.key.Bytes(), data)
	b.sig = ssh.Signature{Format: ssh.KeyAlgoED25519, Blob: b.blob[:]}
	return &b.sig, nil
}

// destroy wipes and unmaps the key once signatures in progress are done.
func (k *edSigner) destroy() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.key.Destroy()
	k.key = nil
}

// newSoftSigner builds the signer of a parsed add request (cert, if not
// nil, is its certificate, whose key the private key must match), and
// the function that wipes its private key.
func newSoftSigner(a *addRequest, cert *ssh.Certificate) (ssh.Signer, func(), error) {
	switch a.keyType {
	case ssh.KeyAlgoED25519, ssh.CertAlgoED25519v01:
		return newEdSigner(a.edPub, a.edPriv)
	case ssh.KeyAlgoRSA, ssh.CertAlgoRSAv01:
		return newRSASigner(a, cert)
	default:
		return newECDSASigner(a, cert)
	}
}

// checkRSAKeyParams bounds an added RSA key as x/crypto's agent does
// (Precompute is cubic in the size of the primes).
func checkRSAKeyParams(n, e, p, q *big.Int) error {
	if n.BitLen() > 16384 {
		return errors.New("rsa modulus too large")
	}
	if p.BitLen() > 8192 || q.BitLen() > 8192 {
		return errors.New("rsa prime too large")
	}
	if e.BitLen() > 24 {
		return errors.New("rsa public exponent too large")
	}
	if v := e.Int64(); v < 3 || v&1 == 0 {
		return errors.New("incorrect rsa public exponent")
	}
	return nil
}

func newRSASigner(a *addRequest, cert *ssh.Certificate) (ssh.Signer, func(), error) {
	n, e := new(big.Int).SetBytes(a.rsaN), new(big.Int).SetBytes(a.rsaE)
	if cert != nil {
		pk, ok := cert.Key.(ssh.CryptoPublicKey)
		rp, ok2 := (*rsa.PublicKey)(nil), false
		if ok {
			rp, ok2 = pk.CryptoPublicKey().(*rsa.PublicKey)
		}
		if !ok2 {
			return nil, nil, fmt.Errorf("certificate for a %s key, not rsa", cert.Key.Type())
		}
		n, e = rp.N, big.NewInt(int64(rp.E))
	}
	d := new(big.Int).SetBytes(a.rsaD)
	p := new(big.Int).SetBytes(a.rsaP)
	q := new(big.Int).SetBytes(a.rsaQ)
	priv := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: n, E: int(e.Int64())},
		D:         d,
		Primes:    []*big.Int{p, q},
	}
	wipe := func() { wipeRSA(priv) }
	if err := checkRSAKeyParams(n, e, p, q); err != nil {
		wipe()
		return nil, nil, err
	}
	// Validate checks that the values make a key (d inverts e modulo
	// the primes' lambda, n = pq) and precomputes the CRT values, so
	// that a bad key is refused now rather than failing each signature.
	if err := priv.Validate(); err != nil {
		wipe()
		return nil, nil, err
	}
	priv.Precompute()
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		wipe()
		return nil, nil, err
	}
	if cert == nil && string(signer.PublicKey().Marshal()) != string(ssh.Marshal(struct {
		Name string
		E, N *big.Int
	}{ssh.KeyAlgoRSA, e, n})) {
		wipe()
		return nil, nil, errors.New("rsa key does not round-trip")
	}
	return signer, wipe, nil
}

// wipeRSA zeroes the words of every private big.Int of k. The copies
// crypto/rsa keeps in its precomputed FIPS key (unexported, as bigmod
// values) are out of reach.
func wipeRSA(k *rsa.PrivateKey) {
	wipeInt(k.D)
	for _, p := range k.Primes {
		wipeInt(p)
	}
	wipeInt(k.Precomputed.Dp)
	wipeInt(k.Precomputed.Dq)
	wipeInt(k.Precomputed.Qinv)
	for _, v := range k.Precomputed.CRTValues {
		wipeInt(v.Exp)
		wipeInt(v.Coeff)
		wipeInt(v.R)
	}
}

// wipeInt zeroes x's words in place (Bits shares them) and sets x to 0.
func wipeInt(x *big.Int) {
	if x == nil {
		return
	}
	clear(x.Bits())
	x.SetInt64(0)
}

func newECDSASigner(a *addRequest, cert *ssh.Certificate) (ssh.Signer, func(), error) {
	var curve elliptic.Curve
	var x, y *big.Int
	if cert != nil {
		pk, ok := cert.Key.(ssh.CryptoPublicKey)
		ep, ok2 := (*ecdsa.PublicKey)(nil), false
		if ok {
			ep, ok2 = pk.CryptoPublicKey().(*ecdsa.PublicKey)
		}
		if !ok2 {
			return nil, nil, fmt.Errorf("certificate for a %s key, not ecdsa", cert.Key.Type())
		}
		curve, x, y = ep.Curve, ep.X, ep.Y
	} else {
		switch string(a.ecCurve) {
		case "nistp256":
			curve = elliptic.P256()
		case "nistp384":
			curve = elliptic.P384()
		case "nistp521":
			curve = elliptic.P521()
		default:
			return nil, nil, fmt.Errorf("unknown curve %q", a.ecCurve)
		}
		x, y = elliptic.Unmarshal(curve, a.ecQ) //nolint:staticcheck // the SSH wire format is the uncompressed point
		if x == nil {
			return nil, nil, errors.New("ecdsa point not on curve")
		}
	}
	priv := &ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: curve, X: x, Y: y}, D: new(big.Int).SetBytes(a.ecD)}
	wipe := func() { wipeInt(priv.D) }
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		wipe()
		return nil, nil, err
	}
	if string(signer.PublicKey().Type()) != a.keyType && cert == nil {
		wipe()
		return nil, nil, fmt.Errorf("key type %s, curve says %s", a.keyType, signer.PublicKey().Type())
	}
	return signer, wipe, nil
}
