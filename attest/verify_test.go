package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/tpmpolicy"
)

// TestVerifyTamper damages real TPM evidence (the golden vectors) one way
// at a time; each damage must fail with its own sentinel.
func TestVerifyTamper(t *testing.T) {
	g := loadGolden(t)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := ssh.NewPublicKey(otherPub)
	otherAK, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	flip := func(b []byte, i int) {
		if i < 0 {
			i += len(b)
		}
		b[i] ^= 0x01
	}

	tests := []struct {
		name   string
		mutate func(e *Evidence, o *VerifyOptions)
		want   []error
	}{
		{"attest bit", func(e *Evidence, o *VerifyOptions) { flip(e.Attest, -1) }, []error{ErrBadSignature}},
		{"signature bit", func(e *Evidence, o *VerifyOptions) { flip(e.Signature, -1) }, []error{ErrBadSignature}},
		{"signature hash sha1", func(e *Evidence, o *VerifyOptions) { e.Signature[3] = 0x04 }, []error{ErrBadSignature, ErrWeakHash}},
		{"pcr value 0 bit", func(e *Evidence, o *VerifyOptions) { flip(e.PCRValues[0], 0) }, []error{ErrPCRDigestMismatch}},
		{"pcr value 3 bit", func(e *Evidence, o *VerifyOptions) { flip(e.PCRValues[3], -1) }, []error{ErrPCRDigestMismatch}},
		{"ak public attribute bit", func(e *Evidence, o *VerifyOptions) { e.AKPublic[7] ^= 0x01 /* restricted, bit 16 */ }, []error{ErrAKNotRestricted}},
		{"ak public point bit", func(e *Evidence, o *VerifyOptions) { flip(e.AKPublic, -1) }, []error{ErrBadAK}},
		{"ak public name alg sha1", func(e *Evidence, o *VerifyOptions) { e.AKPublic[5] = 0x04 }, []error{ErrWeakHash}},
		{"certify attest bit", func(e *Evidence, o *VerifyOptions) { flip(e.CertifyAttest, -1) }, []error{ErrBadCertify}},
		{"certify signature bit", func(e *Evidence, o *VerifyOptions) { flip(e.CertifySignature, -1) }, []error{ErrBadCertify}},
		{"sealed public bit", func(e *Evidence, o *VerifyOptions) { flip(e.SealedPublic, -1) }, []error{ErrBadCertify}},
		{"sealed public user with auth", func(e *Evidence, o *VerifyOptions) { e.SealedPublic[9] |= 0x40 }, []error{ErrBadCertify}},
		{"srk name bit", func(e *Evidence, o *VerifyOptions) { flip(e.SRKName, -1) }, []error{ErrBadCertify}},
		{"identity key bit", func(e *Evidence, o *VerifyOptions) { flip(e.IdentityKey, -1); o.IdentityKey = nil }, []error{ErrNonceMismatch}},
		{"identity key bit, identity expected", func(e *Evidence, o *VerifyOptions) { flip(e.IdentityKey, -1) }, []error{ErrIdentityMismatch}},
		{"identity key type", func(e *Evidence, o *VerifyOptions) { flip(e.IdentityKey, 5) }, []error{ErrMalformed}},
		{"possession bit", func(e *Evidence, o *VerifyOptions) { flip(e.Possession, 0) }, []error{ErrBadPossession}},
		{"possession truncated", func(e *Evidence, o *VerifyOptions) { e.Possession = e.Possession[:63] }, []error{ErrBadPossession}},
		{"wrong nonce", func(e *Evidence, o *VerifyOptions) { flip(o.Nonce, 0) }, []error{ErrNonceMismatch}},
		{"nonce too short", func(e *Evidence, o *VerifyOptions) { o.Nonce = o.Nonce[:7] }, []error{ErrNonceMismatch}},
		{"other identity expected", func(e *Evidence, o *VerifyOptions) { o.IdentityKey = otherKey }, []error{ErrIdentityMismatch}},
		{"other identity substituted", func(e *Evidence, o *VerifyOptions) { e.IdentityKey = otherKey.Marshal(); o.IdentityKey = nil }, []error{ErrNonceMismatch}},
		{"pcr value changed", func(e *Evidence, o *VerifyOptions) { e.PCRValues[2] = make([]byte, 32) }, []error{ErrPCRDigestMismatch}},
		{"expected pcr differs", func(e *Evidence, o *VerifyOptions) { o.ExpectedPCRs = map[int][]byte{7: make([]byte, 32)} }, []error{ErrUnexpectedPCR}},
		{"expected pcr not quoted", func(e *Evidence, o *VerifyOptions) { o.ExpectedPCRs = map[int][]byte{4: make([]byte, 32)} }, []error{ErrUnexpectedPCR}},
		{"selection: drop a pcr", func(e *Evidence, o *VerifyOptions) {
			e.PCRs, e.PCRValues = []int{0, 7, 10}, [][]byte{e.PCRValues[0], e.PCRValues[2], e.PCRValues[3]}
		}, []error{ErrSelectionMismatch}},
		{"selection: add a pcr", func(e *Evidence, o *VerifyOptions) {
			e.PCRs = append(e.PCRs, 11)
			e.PCRValues = append(e.PCRValues, make([]byte, 32))
		}, []error{ErrSelectionMismatch}},
		{"selection: relabel a pcr", func(e *Evidence, o *VerifyOptions) { e.PCRs[3] = 11 }, []error{ErrSelectionMismatch}},
		{"other ak pinned by name", func(e *Evidence, o *VerifyOptions) { flip(o.TrustedAKName, -1) }, []error{ErrUntrustedAK}},
		{"other ak pinned by key", func(e *Evidence, o *VerifyOptions) { o.TrustedAK = &otherAK.PublicKey }, []error{ErrUntrustedAK}},
		{"ak pinned by nil key", func(e *Evidence, o *VerifyOptions) { o.TrustedAK = (*ecdsa.PublicKey)(nil) }, []error{ErrUntrustedAK}},
		{"ak pinned by empty key", func(e *Evidence, o *VerifyOptions) { o.TrustedAK = &ecdsa.PublicKey{} }, []error{ErrUntrustedAK}},
		{"ak pinned by key of another curve", func(e *Evidence, o *VerifyOptions) {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			o.TrustedAK = &k.PublicKey
		}, []error{ErrUntrustedAK}},
		{"ak pinned by key of another type", func(e *Evidence, o *VerifyOptions) { o.TrustedAK = otherPub }, []error{ErrUntrustedAK}},
		{"sha1 bank", func(e *Evidence, o *VerifyOptions) {
			e.Bank = tpm2.TPMAlgSHA1
			for i := range e.PCRValues {
				e.PCRValues[i] = e.PCRValues[i][:20]
			}
		}, []error{ErrWeakHash}},
		{"sha384 bank", func(e *Evidence, o *VerifyOptions) { e.Bank = tpm2.TPMAlgSHA384 }, []error{ErrWeakHash}},
		{"version 3", func(e *Evidence, o *VerifyOptions) { e.Version = 3 }, []error{ErrUnsupportedVersion}},
		{"certify presented as quote", func(e *Evidence, o *VerifyOptions) { e.Attest, e.Signature = e.CertifyAttest, e.CertifySignature }, []error{ErrBadType}},
		{"quote presented as certify", func(e *Evidence, o *VerifyOptions) { e.CertifyAttest, e.CertifySignature = e.Attest, e.Signature }, []error{ErrBadCertify, ErrBadType}},
		{"certify removed", func(e *Evidence, o *VerifyOptions) { e.CertifyAttest, e.CertifySignature = nil, nil }, []error{ErrNoCertify}},
		{"certify signature removed", func(e *Evidence, o *VerifyOptions) { e.CertifySignature = nil }, []error{ErrMalformed}},
		{"sealed pcr not quoted", func(e *Evidence, o *VerifyOptions) { e.SealedPCRs = []int{0, 9} }, []error{ErrMalformed}},
		{"pcr values missing", func(e *Evidence, o *VerifyOptions) { e.PCRValues = e.PCRValues[:1] }, []error{ErrMalformed}},
		{"pcr value short", func(e *Evidence, o *VerifyOptions) { e.PCRValues[1] = e.PCRValues[1][:31] }, []error{ErrMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := g.clone(t)
			o := g.opts()
			tt.mutate(e, &o)
			res, err := Verify(e, o)
			if err == nil {
				t.Fatalf("Verify accepted it: %+v", res)
			}
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("Verify = %v; want errors.Is %v", err, want)
				}
			}
			// Errors name what failed, in house style.
			if msg := err.Error(); len(msg) < 8 || msg[:8] != "attest: " {
				t.Errorf("error %q lacks the attest: prefix", msg)
			}
		})
	}
}

// TestVerifyHintsOnly: SealedPCRs is an unauthenticated hint: a wrong one
// only turns SealedPolicyMatches false.
func TestVerifyHintsOnly(t *testing.T) {
	g := loadGolden(t)
	for _, sealed := range [][]int{nil, {0}, {7}, {0, 1, 7}, {0, 7, 10}} {
		e := g.clone(t)
		e.SealedPCRs = sealed
		res, err := Verify(e, g.opts())
		if err != nil {
			t.Fatalf("sealed PCRs %v: %v", sealed, err)
		}
		if res.SealedPolicyMatches {
			t.Fatalf("sealed PCRs %v: policy reported matching", sealed)
		}
	}
}

// TestVerifyEveryBitFlip flips each bit of the golden evidence's SSH
// encoding in turn: no flip may yield evidence that verifies, except in the
// SealedPCRs hint, which can only lose SealedPolicyMatches.
func TestVerifyEveryBitFlip(t *testing.T) {
	g := loadGolden(t)
	valid := g.e.MarshalSSH()
	opts := g.opts()
	opts.IdentityKey = nil
	bits := 8
	if testing.Short() {
		bits = 1
	}
	for i := range valid {
		for bit := 0; bit < bits; bit++ {
			b := bytes.Clone(valid)
			b[i] ^= 1 << bit
			e, err := ParseSSH(b)
			if err != nil {
				continue
			}
			res, err := Verify(e, opts)
			if err != nil {
				continue
			}
			e.SealedPCRs = g.e.SealedPCRs
			if res.SealedPolicyMatches || !bytes.Equal(e.MarshalSSH(), valid) {
				t.Fatalf("flipping bit %d of byte %d: evidence still verifies: %+v", bit, i, res)
			}
		}
	}
}

// forger makes evidence with a software "attestation key": it can sign
// anything, which lets tests present validly signed structures that a real
// TPM would never produce, as the CVE classes of quote checkers need
// (tpm2-tools checkquote not checking magic, PCR selection or nonce). A
// verifier that does not pin its AK accepts such a key: pinning is what
// ties evidence to a TPM.
type forger struct {
	t        testing.TB
	ak       *ecdsa.PrivateKey
	akPublic []byte
	akName   []byte
	id       ed25519.PrivateKey
	idKey    ssh.PublicKey
	srkName  []byte
	nonce    []byte
	pcrs     []int
	values   [][]byte
}

func newForger(t testing.TB) *forger {
	f := &forger{t: t, pcrs: []int{0, 7, 10}, nonce: []byte("a nonce of some length")}
	var err error
	if f.ak, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	f.akPublic, f.akName = f.publicArea(akTemplate, &f.ak.PublicKey)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f.id = priv
	f.idKey, _ = ssh.NewPublicKey(pub)
	f.srkName = make([]byte, 34)
	rand.Read(f.srkName[2:])
	f.srkName[1] = 0x0b
	for range f.pcrs {
		v := make([]byte, 32)
		rand.Read(v)
		f.values = append(f.values, v)
	}
	return f
}

// publicArea returns the marshalled TPM2B_PUBLIC of tmpl with key's point
// and its name.
func (f *forger) publicArea(tmpl tpm2.TPMTPublic, key *ecdsa.PublicKey) ([]byte, []byte) {
	b, _ := key.Bytes()
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: b[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: b[33:]},
	})
	raw := tpm2.Marshal(tmpl)
	return tpm2.Marshal(tpm2.New2B(tmpl)), objectName(raw)
}

func (f *forger) sign(msg []byte) []byte {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, f.ak, d[:])
	if err != nil {
		f.t.Fatal(err)
	}
	pad := func(x *big.Int) []byte { return x.FillBytes(make([]byte, 32)) }
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: pad(r)},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: pad(s)},
		}),
	})
}

// sealedPublic is a proper sealed identity's public area bound to the
// forger's PCR values 0 and 7.
func (f *forger) sealedPublic(mutate func(*tpm2.TPMTPublic)) []byte {
	policy, err := tpmpolicy.PCR(tpm2.TPMAlgSHA256, []int{0, 7}, [][]byte{f.values[0], f.values[1]})
	if err != nil {
		f.t.Fatal(err)
	}
	unique := sha256.Sum256([]byte("unique"))
	p := tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true, AdminWithPolicy: true},
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
	if mutate != nil {
		mutate(&p)
	}
	return tpm2.Marshal(tpm2.New2B(p))
}

// forgery says how to damage forged evidence: the quote and certify
// structures before they are signed, their bytes, or the evidence.
type forgery struct {
	quote        func(*tpm2.TPMSAttest)
	quoteBytes   func([]byte) []byte
	certify      func(*tpm2.TPMSAttest)
	certifyBytes func([]byte) []byte
	sealed       func(*tpm2.TPMTPublic)
	evidence     func(*Evidence)
}

func (f *forger) evidence(d forgery) *Evidence {
	binding := Binding(f.nonce, f.idKey)
	clock := tpm2.TPMSClockInfo{Clock: 1234, ResetCount: 5, RestartCount: 6, Safe: true}
	signer := srkChildQN(f.srkName, f.akName)
	q := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: signer},
		ExtraData:       tpm2.TPM2BData{Buffer: binding},
		ClockInfo:       clock,
		FirmwareVersion: 42,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: selection(tpm2.TPMAlgSHA256, f.pcrs),
			PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(f.values)},
		}),
	}
	if d.quote != nil {
		d.quote(&q)
	}
	attest := tpm2.Marshal(q)
	if d.quoteBytes != nil {
		attest = d.quoteBytes(attest)
	}
	sealed := f.sealedPublic(d.sealed)
	_, raw, err := parseTPM2BPublic(sealed)
	if err != nil {
		f.t.Fatal(err)
	}
	name := objectName(raw)
	c := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestSessionAudit,
		QualifiedSigner: tpm2.TPM2BName{Buffer: signer},
		ExtraData:       tpm2.TPM2BData{Buffer: binding},
		ClockInfo:       clock,
		FirmwareVersion: 42,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestSessionAudit, &tpm2.TPMSSessionAuditInfo{
			ExclusiveSession: true,
			SessionDigest:    tpm2.TPM2BDigest{Buffer: readPublicAuditDigest(sealed, name, srkChildQN(f.srkName, name))},
		}),
	}
	if d.certify != nil {
		d.certify(&c)
	}
	certify := tpm2.Marshal(c)
	if d.certifyBytes != nil {
		certify = d.certifyBytes(certify)
	}
	e := &Evidence{
		Version:          Version,
		Attest:           attest,
		Signature:        f.sign(attest),
		Bank:             tpm2.TPMAlgSHA256,
		PCRs:             f.pcrs,
		PCRValues:        f.values,
		AKPublic:         f.akPublic,
		CertifyAttest:    certify,
		CertifySignature: f.sign(certify),
		SealedPublic:     sealed,
		SRKName:          f.srkName,
		SealedPCRs:       []int{0, 7},
		PolicyKind:       PolicyPCR,
		IdentityKey:      f.idKey.Marshal(),
		Possession:       ed25519.Sign(f.id, PossessionMessage(f.nonce, attest)),
	}
	if d.evidence != nil {
		d.evidence(e)
	}
	return e
}

// TestVerifyForged checks each semantic check with validly signed
// structures a TPM would not produce.
func TestVerifyForged(t *testing.T) {
	f := newForger(t)
	other := newForger(t)
	opts := VerifyOptions{Nonce: f.nonce}

	res, err := Verify(f.evidence(forgery{}), opts)
	if err != nil {
		t.Fatalf("forged baseline: %v", err)
	}
	if res.AKPinned || !res.Certified || !res.SealedPolicyMatches {
		t.Fatalf("forged baseline result %+v", res)
	}
	// Pinning is what defeats a software AK.
	if _, err := Verify(f.evidence(forgery{}), VerifyOptions{Nonce: f.nonce, TrustedAK: &other.ak.PublicKey}); !errors.Is(err, ErrUntrustedAK) {
		t.Fatalf("software AK with a pin: %v", err)
	}

	sha1Template := akTemplate
	sha1Template.NameAlg = tpm2.TPMAlgSHA1
	sha1Scheme := akTemplate
	sha1Scheme.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA1})},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	unrestricted := akTemplate
	unrestricted.ObjectAttributes.Restricted = false
	withPolicy := akTemplate
	withPolicy.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 32)}
	akFrom := func(tmpl tpm2.TPMTPublic) func(*Evidence) {
		return func(e *Evidence) { e.AKPublic, _ = f.publicArea(tmpl, &f.ak.PublicKey) }
	}

	tests := []struct {
		name string
		d    forgery
		want []error
	}{
		// The quote.
		{"quote magic", forgery{quote: func(a *tpm2.TPMSAttest) { a.Magic = 0xff544348 }}, []error{ErrBadMagic}},
		{"quote magic zero", forgery{quoteBytes: func(b []byte) []byte { copy(b, []byte{0, 0, 0, 0}); return b }}, []error{ErrBadMagic}},
		{"quote truncated", forgery{quoteBytes: func(b []byte) []byte { return b[:5] }}, []error{ErrBadMagic}},
		{"quote type certify", forgery{quoteBytes: func(b []byte) []byte { b[4], b[5] = 0x80, 0x17; return b }}, []error{ErrBadType}},
		{"quote trailing bytes", forgery{quoteBytes: func(b []byte) []byte { return append(b, 0) }}, []error{ErrMalformed}},
		{"nonce used raw as extraData", forgery{quote: func(a *tpm2.TPMSAttest) { a.ExtraData.Buffer = f.nonce }}, []error{ErrNonceMismatch}},
		{"empty extraData", forgery{quote: func(a *tpm2.TPMSAttest) { a.ExtraData.Buffer = nil }}, []error{ErrNonceMismatch}},
		{"binding prefix only", forgery{quote: func(a *tpm2.TPMSAttest) { a.ExtraData.Buffer = Binding(f.nonce, f.idKey)[:16] }}, []error{ErrNonceMismatch}},
		{"selection subset signed", forgery{quote: func(a *tpm2.TPMSAttest) {
			a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
				PCRSelect: selection(tpm2.TPMAlgSHA256, []int{0, 7}),
				PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(f.values)},
			})
		}}, []error{ErrSelectionMismatch}},
		{"selection in sha1 bank", forgery{quote: func(a *tpm2.TPMSAttest) {
			a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
				PCRSelect: selection(tpm2.TPMAlgSHA1, f.pcrs),
				PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(f.values)},
			})
		}}, []error{ErrSelectionMismatch}},
		{"selection with a second bank", forgery{quote: func(a *tpm2.TPMSAttest) {
			sel := selection(tpm2.TPMAlgSHA256, f.pcrs)
			sel.PCRSelections = append(sel.PCRSelections, selection(tpm2.TPMAlgSHA1, []int{0}).PCRSelections...)
			a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{PCRSelect: sel, PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(f.values)}})
		}}, []error{ErrSelectionMismatch}},
		{"selection above pcr 23", forgery{quote: func(a *tpm2.TPMSAttest) {
			sel := selection(tpm2.TPMAlgSHA256, f.pcrs)
			sel.PCRSelections[0].PCRSelect = append(sel.PCRSelections[0].PCRSelect, 1)
			a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{PCRSelect: sel, PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(f.values)}})
		}}, []error{ErrSelectionMismatch}},
		{"4-byte selection bitmap is fine", forgery{quote: func(a *tpm2.TPMSAttest) {
			sel := selection(tpm2.TPMAlgSHA256, f.pcrs)
			sel.PCRSelections[0].PCRSelect = append(sel.PCRSelections[0].PCRSelect, 0)
			a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{PCRSelect: sel, PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(f.values)}})
		}}, nil},
		{"pcr digest of other values", forgery{quote: func(a *tpm2.TPMSAttest) {
			a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
				PCRSelect: selection(tpm2.TPMAlgSHA256, f.pcrs),
				PCRDigest: tpm2.TPM2BDigest{Buffer: pcrDigest(other.values)},
			})
		}}, []error{ErrPCRDigestMismatch}},

		// The attestation key.
		{"ak sha1 name", forgery{evidence: akFrom(sha1Template)}, []error{ErrWeakHash}},
		{"ak sha1 scheme", forgery{evidence: akFrom(sha1Scheme)}, []error{ErrWeakHash}},
		{"ak unrestricted", forgery{evidence: akFrom(unrestricted)}, []error{ErrAKNotRestricted}},
		{"ak with a policy", forgery{evidence: akFrom(withPolicy)}, []error{ErrBadAK}},
		{"ak is the sealed object", forgery{evidence: func(e *Evidence) { e.AKPublic = e.SealedPublic }}, []error{ErrBadAK}},
		{"ak empty", forgery{evidence: func(e *Evidence) { e.AKPublic = []byte{0, 0} }}, []error{ErrBadAK}},

		// The certification.
		{"certify magic", forgery{certify: func(a *tpm2.TPMSAttest) { a.Magic = 1 }}, []error{ErrBadCertify, ErrBadMagic}},
		{"certify type", forgery{certifyBytes: func(b []byte) []byte { b[5] = 0x17; return b }}, []error{ErrBadCertify, ErrBadType}},
		{"certify nonce", forgery{certify: func(a *tpm2.TPMSAttest) { a.ExtraData.Buffer = f.nonce }}, []error{ErrBadCertify, ErrNonceMismatch}},
		{"certify other signer", forgery{certify: func(a *tpm2.TPMSAttest) { a.QualifiedSigner.Buffer = other.srkName }}, []error{ErrBadCertify}},
		{"certify other boot", forgery{certify: func(a *tpm2.TPMSAttest) { a.ClockInfo.ResetCount++ }}, []error{ErrBadCertify}},
		{"certify other restart", forgery{certify: func(a *tpm2.TPMSAttest) { a.ClockInfo.RestartCount++ }}, []error{ErrBadCertify}},
		{"certify other firmware", forgery{certify: func(a *tpm2.TPMSAttest) { a.FirmwareVersion++ }}, []error{ErrBadCertify}},
		{"certify audit of another command", forgery{certify: func(a *tpm2.TPMSAttest) {
			a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestSessionAudit, &tpm2.TPMSSessionAuditInfo{SessionDigest: tpm2.TPM2BDigest{Buffer: make([]byte, 32)}})
		}}, []error{ErrBadCertify}},
		{"certify under another srk", forgery{evidence: func(e *Evidence) { e.SRKName = other.srkName }}, []error{ErrBadCertify}},
		{"certify srk name short", forgery{evidence: func(e *Evidence) { e.SRKName = e.SRKName[:33] }}, []error{ErrBadCertify}},
		{"certify of another object", forgery{evidence: func(e *Evidence) { e.SealedPublic = other.sealedPublic(nil) }}, []error{ErrBadCertify}},
		{"certify sealed public missing", forgery{evidence: func(e *Evidence) { e.SealedPublic = nil }}, []error{ErrBadCertify}},
		{"certify signature by another key", forgery{evidence: func(e *Evidence) { e.CertifySignature = other.sign(e.CertifyAttest) }}, []error{ErrBadCertify}},

		// The sealed object.
		{"sealed user with auth", forgery{sealed: func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true }}, []error{ErrSealedAttributes}},
		{"sealed not fixed tpm", forgery{sealed: func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }}, []error{ErrSealedAttributes}},
		{"sealed not fixed parent", forgery{sealed: func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false }}, []error{ErrSealedAttributes}},
		{"sealed is a signing key", forgery{sealed: func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = true }}, []error{ErrSealedAttributes}},
		{"sealed sha1 name", forgery{sealed: func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }}, []error{ErrBadCertify, ErrWeakHash}},

		// The proof of possession.
		{"possession over another quote", forgery{evidence: func(e *Evidence) {
			e.Possession = ed25519.Sign(f.id, PossessionMessage(f.nonce, append(bytes.Clone(e.Attest), 0)))
		}}, []error{ErrBadPossession}},
		{"possession by another key", forgery{evidence: func(e *Evidence) {
			e.Possession = ed25519.Sign(other.id, PossessionMessage(f.nonce, e.Attest))
		}}, []error{ErrBadPossession}},
		{"possession over the raw attest", forgery{evidence: func(e *Evidence) { e.Possession = ed25519.Sign(f.id, e.Attest) }}, []error{ErrBadPossession}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(f.evidence(tt.d), opts)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Verify = %v; want success", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Verify accepted it")
			}
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("Verify = %v; want errors.Is %v", err, want)
				}
			}
		})
	}

	// A sealed object whose policy is over other values is certified but
	// no longer unseals.
	res, err = Verify(f.evidence(forgery{sealed: func(p *tpm2.TPMTPublic) {
		p.AuthPolicy.Buffer, _ = tpmpolicy.PCR(tpm2.TPMAlgSHA256, []int{0, 7}, [][]byte{other.values[0], other.values[1]})
	}}), opts)
	if err != nil || !res.Certified || res.SealedPolicyMatches {
		t.Fatalf("sealed policy over other values: %+v, %v; want certified, not matching", res, err)
	}
}

func TestUnexpectedPCRError(t *testing.T) {
	err := error(&UnexpectedPCRError{PCRs: []int{0, 7}, Missing: []int{9}})
	if !errors.Is(err, ErrUnexpectedPCR) {
		t.Fatal("not ErrUnexpectedPCR")
	}
	if got, want := err.Error(), "attest: PCRs 0, 7 differ from the expected values; PCR 9 is expected but not quoted"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestVerifyNil(t *testing.T) {
	if _, err := Verify(nil, VerifyOptions{Nonce: make([]byte, 8)}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify(nil) = %v", err)
	}
	if _, err := Verify(&Evidence{}, VerifyOptions{Nonce: make([]byte, 8)}); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("Verify(empty) = %v", err)
	}
}
