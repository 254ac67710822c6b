package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/tpmpolicy"
)

// VerifyOptions say what the verifier expects.
type VerifyOptions struct {
	// Nonce is the challenge the verifier sent, 8 to 64 bytes. Required.
	Nonce []byte
	// IdentityKey, if set, is the identity the evidence must be about.
	IdentityKey ssh.PublicKey
	// ExpectedPCRs, if set, are PCR values the quote must show. Every
	// listed PCR must be quoted.
	ExpectedPCRs map[int][]byte
	// TrustedAK, if set, pins the attestation key by its public key (an
	// *ecdsa.PublicKey, as AK.Public returns or x509.ParsePKIXPublicKey
	// reads from AK.PublicPEM).
	TrustedAK crypto.PublicKey
	// TrustedAKName, if set, pins the attestation key by its TPM Name (as
	// AK.Name returns). If both pins are set, both must match. Without a
	// pin, evidence proves only that some key that claims to be a TPM
	// attestation key signed it; see the package documentation.
	TrustedAKName []byte
	// AllowMissingCertify accepts evidence that does not certify the
	// sealed object (Result.Certified is then false). By default such
	// evidence fails with ErrNoCertify.
	AllowMissingCertify bool
}

// Result is what verified evidence says.
type Result struct {
	// AKName is the TPM Name of the attestation key that signed.
	AKName []byte
	// AKPublic is the attestation key.
	AKPublic *ecdsa.PublicKey
	// AKPinned is true if the options pinned the attestation key (and it
	// matched). False means the caller did not pin it: nothing then ties
	// the evidence to a particular TPM, or to a TPM at all.
	AKPinned bool
	// PCRs are the quoted PCR values (SHA-256 bank) by index.
	PCRs map[int][]byte
	// Identity is the identity key the evidence is about; its holder
	// signed the quote (proof of possession).
	Identity ssh.PublicKey
	// Certified is true if the TPM certified that the sealed object is
	// loaded under its storage root key, alongside the attestation key.
	Certified bool
	// SealedName is the TPM Name of the certified sealed object (nil
	// unless Certified).
	SealedName []byte
	// SealedPCRs are the PCRs the sealed object's policy covers, as the
	// evidence states them (nil unless Certified).
	SealedPCRs []int
	// SealedPolicyKind and SealedPIN are the sealed object's policy as
	// the evidence describes it (PolicyUnknown for version 1 evidence).
	// They are trusted only as far as SealedPolicyMatches.
	SealedPolicyKind PolicyKind
	SealedPIN        bool
	// SealedPolicySigner is the TPM Name of the policy key a
	// PolicyAuthorizedPCR object is bound to, when the certified
	// authPolicy is indeed PolicyAuthorize by it (and PolicyAuthValue if
	// SealedPIN).
	SealedPolicySigner []byte
	// SealedPolicyMatches is true if the certified sealed object's
	// authPolicy is the policy the evidence describes and the quoted
	// values of SealedPCRs satisfy it: for PolicyPCR, the authPolicy is
	// the TPM2_PolicyPCR digest over those values (then
	// TPM2_PolicyAuthValue with a PIN); for PolicyAuthorizedPCR, it is
	// TPM2_PolicyAuthorize by the policy key (then PolicyAuthValue with a
	// PIN) and the key signed an approval of the PolicyPCR digest over
	// those values. So at the time of the quote the TPM would have
	// unsealed the identity (given its PIN). False means its PCRs changed
	// since it was sealed or approved (the key is not usable now), the
	// description is wrong, or the evidence is not certified.
	SealedPolicyMatches bool
}

// Verify checks evidence against the verifier's options, with no TPM. The
// checks, each failing with its own sentinel error (see the Err
// variables), are, in order:
//
//   - structure and version (ErrMalformed, ErrUnsupportedVersion);
//   - the nonce is 8 to 64 bytes (ErrNonceMismatch), the identity key is
//     ssh-ed25519 (ErrMalformed) and is opts.IdentityKey if given
//     (ErrIdentityMismatch);
//   - the PCR bank is SHA-256 (ErrWeakHash);
//   - the AK is a restricted ECC P-256 ECDSA-SHA256 signing key with a
//     SHA-256 name (ErrBadAK, ErrAKNotRestricted, ErrWeakHash) and is the
//     pinned one (ErrUntrustedAK);
//   - the quote's signature verifies with the AK (ErrBadSignature);
//   - the quote starts with TPM_GENERATED_VALUE (ErrBadMagic) and is of
//     type TPM_ST_ATTEST_QUOTE (ErrBadType);
//   - its extraData is Binding(nonce, identity key), compared in constant
//     time (ErrNonceMismatch);
//   - the quoted PCR selection is exactly the claimed PCRs of the SHA-256
//     bank (ErrSelectionMismatch), and the claimed values hash to the
//     quoted digest (ErrPCRDigestMismatch);
//   - PCRs hold opts.ExpectedPCRs (ErrUnexpectedPCR, an
//     *UnexpectedPCRError naming them);
//   - the certification of the sealed object (ErrBadCertify; ErrNoCertify
//     if absent, unless opts.AllowMissingCertify): a session audit
//     attestation signed by the AK, with the magic, type
//     TPM_ST_ATTEST_SESSION_AUDIT, the same extraData, signer and boot
//     (reset and restart counts) as the quote, whose audit digest is that
//     of TPM2_ReadPublic returning SealedPublic, its Name and the
//     Qualified Name of a child of the SRK; the AK must be a child of the
//     same SRK. Then the sealed object must be a sealed data object with
//     fixedTPM and fixedParent set and userWithAuth clear
//     (ErrSealedAttributes), and Result.SealedPolicyMatches records
//     whether its authPolicy is the policy the evidence describes (PCR or
//     signed PCR policy, with or without PIN) and the quoted values of
//     SealedPCRs satisfy it;
//   - the proof of possession: an Ed25519 signature by the identity key
//     over PossessionMessage(nonce, Attest) (ErrBadPossession).
//
// Verify never panics, whatever e holds.
func Verify(e *Evidence, opts VerifyOptions) (*Result, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	if n := len(opts.Nonce); n < MinNonceSize || n > MaxNonceSize {
		return nil, fmt.Errorf("%w: the verifier's nonce is %d bytes, want %d to %d", ErrNonceMismatch, n, MinNonceSize, MaxNonceSize)
	}
	identity, idKey, err := parseIdentityKey(e.IdentityKey)
	if err != nil {
		return nil, err
	}
	if opts.IdentityKey != nil && !bytes.Equal(opts.IdentityKey.Marshal(), e.IdentityKey) {
		return nil, fmt.Errorf("%w: evidence is about %s, want %s", ErrIdentityMismatch, ssh.FingerprintSHA256(identity), ssh.FingerprintSHA256(opts.IdentityKey))
	}
	if e.Bank != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("%w: PCR bank %s", ErrWeakHash, bankName(e.Bank))
	}
	for i, v := range e.PCRValues {
		if len(v) != sha256Size {
			return nil, malformed("pcr values", "PCR %d value is %d bytes, want %d", e.PCRs[i], len(v), sha256Size)
		}
	}

	// The attestation key.
	akKey, akName, err := parseAKPublic(e.AKPublic)
	if err != nil {
		return nil, err
	}
	res := &Result{AKName: akName, AKPublic: akKey, Identity: identity}
	if opts.TrustedAK != nil {
		want, ok := opts.TrustedAK.(*ecdsa.PublicKey)
		if !ok || !sameKey(want, akKey) {
			return nil, fmt.Errorf("%w: signed by the attestation key named %x, which is not the trusted key", ErrUntrustedAK, akName)
		}
		res.AKPinned = true
	}
	if opts.TrustedAKName != nil {
		if subtle.ConstantTimeCompare(opts.TrustedAKName, akName) != 1 {
			return nil, fmt.Errorf("%w: signed by the attestation key named %x, want %x", ErrUntrustedAK, akName, opts.TrustedAKName)
		}
		res.AKPinned = true
	}

	// The quote.
	if err := verifyECDSA(akKey, e.Attest, e.Signature); err != nil {
		return nil, wrapSig(ErrBadSignature, err)
	}
	if err := attestHeader(e.Attest, stAttestQuote); err != nil {
		return nil, err
	}
	quote, err := parseAttest(e.Attest)
	if err != nil {
		return nil, err
	}
	binding := Binding(opts.Nonce, identity)
	if subtle.ConstantTimeCompare(quote.ExtraData.Buffer, binding) != 1 {
		return nil, fmt.Errorf("%w: the quote's extraData is not Binding(nonce, identity key)", ErrNonceMismatch)
	}
	info, err := quote.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("%w: quote info: %v", ErrMalformed, err)
	}
	quoted, ok := selectionBits(info.PCRSelect, e.Bank)
	if claimed := maskOf(e.PCRs); !ok || quoted != claimed {
		if !ok {
			return nil, fmt.Errorf("%w: the quote selects PCRs of another bank or above 23", ErrSelectionMismatch)
		}
		return nil, fmt.Errorf("%w: quoted PCRs [%s], evidence claims [%s]", ErrSelectionMismatch, joinInts(indexesOf(quoted)), joinInts(e.PCRs))
	}
	if subtle.ConstantTimeCompare(info.PCRDigest.Buffer, pcrDigest(e.PCRValues)) != 1 {
		return nil, fmt.Errorf("%w: quoted digest %x", ErrPCRDigestMismatch, info.PCRDigest.Buffer)
	}
	res.PCRs = make(map[int][]byte, len(e.PCRs))
	for i, p := range e.PCRs {
		res.PCRs[p] = bytes.Clone(e.PCRValues[i])
	}
	if err := checkExpected(res.PCRs, opts.ExpectedPCRs); err != nil {
		return nil, err
	}

	// The sealed object.
	if len(e.CertifyAttest) == 0 {
		if !opts.AllowMissingCertify {
			return nil, ErrNoCertify
		}
	} else {
		if err := verifyCertify(e, quote, akKey, akName, binding, res); err != nil {
			return nil, err
		}
	}

	// The identity's proof of possession.
	if len(e.Possession) != ed25519.SignatureSize || !ed25519.Verify(idKey, PossessionMessage(opts.Nonce, e.Attest), e.Possession) {
		return nil, ErrBadPossession
	}
	return res, nil
}

// sameKey reports whether want, a caller's pin that may be nil or
// half-built, is the key got.
func sameKey(want, got *ecdsa.PublicKey) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	if want == nil {
		return false
	}
	w, err := want.Bytes()
	if err != nil {
		return false
	}
	g, err := got.Bytes()
	return err == nil && bytes.Equal(w, g)
}

// wrapSig wraps a signature verification failure in sentinel, keeping
// ErrWeakHash visible if that was the cause.
func wrapSig(sentinel, err error) error {
	if errors.Is(err, ErrWeakHash) {
		return within(sentinel, err)
	}
	return fmt.Errorf("%w: %v", sentinel, err)
}

// within returns an error that wraps outer and err (errors.Is matches
// both), reading "outer: err" with err's own "attest: " prefix dropped.
func within(outer, err error) error {
	return &nestedError{outer: outer, err: err}
}

type nestedError struct{ outer, err error }

func (e *nestedError) Error() string {
	return e.outer.Error() + ": " + strings.TrimPrefix(e.err.Error(), "attest: ")
}

func (e *nestedError) Unwrap() []error { return []error{e.outer, e.err} }

// parseIdentityKey decodes the identity key, which must be a canonical
// ssh-ed25519 wire key.
func parseIdentityKey(b []byte) (ssh.PublicKey, ed25519.PublicKey, error) {
	k, err := ssh.ParsePublicKey(b)
	if err != nil {
		return nil, nil, malformed("identity key", "%v", err)
	}
	if k.Type() != ssh.KeyAlgoED25519 || !bytes.Equal(k.Marshal(), b) {
		return nil, nil, malformed("identity key", "%s key, want a canonical ssh-ed25519 key", k.Type())
	}
	pub, err := ed25519Key(k)
	if err != nil {
		return nil, nil, malformed("identity key", "%v", err)
	}
	return k, pub, nil
}

// checkExpected compares quoted PCR values with the expected ones.
func checkExpected(got, want map[int][]byte) error {
	e := &UnexpectedPCRError{}
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			e.Missing = append(e.Missing, p)
		case !bytes.Equal(g, w):
			e.PCRs = append(e.PCRs, p)
		}
	}
	if len(e.PCRs) == 0 && len(e.Missing) == 0 {
		return nil
	}
	slices.Sort(e.PCRs)
	slices.Sort(e.Missing)
	return e
}

// badCertify returns an error wrapping ErrBadCertify and, if not nil, the
// sentinel of the failed check.
func badCertify(check error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if check != nil {
		return within(ErrBadCertify, fmt.Errorf("%w: %s", check, msg))
	}
	return fmt.Errorf("%w: %s", ErrBadCertify, msg)
}

// verifyCertify checks the certification of the sealed object and fills
// in the sealed-object part of res.
func verifyCertify(e *Evidence, quote *tpm2.TPMSAttest, akKey *ecdsa.PublicKey, akName, binding []byte, res *Result) error {
	if err := verifyECDSA(akKey, e.CertifyAttest, e.CertifySignature); err != nil {
		return wrapSig(ErrBadCertify, err)
	}
	if err := attestHeader(e.CertifyAttest, stAttestSessionAudit); err != nil {
		return within(ErrBadCertify, err)
	}
	cert, err := parseAttest(e.CertifyAttest)
	if err != nil {
		return within(ErrBadCertify, err)
	}
	if subtle.ConstantTimeCompare(cert.ExtraData.Buffer, binding) != 1 {
		return badCertify(ErrNonceMismatch, "extraData is not Binding(nonce, identity key)")
	}
	if !bytes.Equal(cert.QualifiedSigner.Buffer, quote.QualifiedSigner.Buffer) {
		return badCertify(nil, "signed by another key than the quote")
	}
	if cert.ClockInfo.ResetCount != quote.ClockInfo.ResetCount || cert.ClockInfo.RestartCount != quote.ClockInfo.RestartCount || cert.FirmwareVersion != quote.FirmwareVersion {
		return badCertify(nil, "not from the same boot and firmware as the quote")
	}
	audit, err := cert.Attested.SessionAudit()
	if err != nil {
		return badCertify(ErrMalformed, "session audit info: %v", err)
	}
	if len(e.SRKName) != nameSize || e.SRKName[0] != 0 || e.SRKName[1] != byte(tpm2.TPMAlgSHA256) {
		return badCertify(nil, "SRK name is not a SHA-256 TPM name")
	}
	// The AK, and so both attestations, belong to the SRK's hierarchy.
	if !bytes.Equal(quote.QualifiedSigner.Buffer, srkChildQN(e.SRKName, akName)) {
		return badCertify(nil, "the attestation key is not a child of the storage root key %x", e.SRKName)
	}
	sealed, _, err := parseTPM2BPublic(e.SealedPublic)
	if err != nil {
		return badCertify(nil, "sealed public area: %v", err)
	}
	if sealed.NameAlg != tpm2.TPMAlgSHA256 {
		return badCertify(ErrWeakHash, "sealed object nameAlg 0x%04x", uint16(sealed.NameAlg))
	}
	name, err := nameOf(sealed)
	if err != nil {
		return badCertify(nil, "sealed object name: %v", err)
	}
	want := readPublicAuditDigest(e.SealedPublic, name, srkChildQN(e.SRKName, name))
	if subtle.ConstantTimeCompare(audit.SessionDigest.Buffer, want) != 1 {
		return badCertify(nil, "the audited command is not TPM2_ReadPublic of this sealed object under this SRK")
	}

	attrs := sealed.ObjectAttributes
	switch {
	case sealed.Type != tpm2.TPMAlgKeyedHash || attrs.SignEncrypt || attrs.Decrypt:
		return fmt.Errorf("%w: not a sealed data object (type 0x%04x, attributes 0x%08x)", ErrSealedAttributes, uint16(sealed.Type), attrBits(attrs))
	case !attrs.FixedTPM || !attrs.FixedParent:
		return fmt.Errorf("%w: fixedTPM and fixedParent must be set (attributes 0x%08x): the seed could leave this TPM", ErrSealedAttributes, attrBits(attrs))
	case attrs.UserWithAuth:
		return fmt.Errorf("%w: userWithAuth is set: a password unseals it whatever the PCRs", ErrSealedAttributes)
	}

	res.Certified = true
	res.SealedName = name
	res.SealedPCRs = slices.Clone(e.SealedPCRs)
	res.SealedPolicyKind = e.PolicyKind
	res.SealedPIN = e.PolicyPIN
	res.SealedPolicyMatches = policyMatches(e, res.PCRs, sealed.AuthPolicy.Buffer, res)
	return nil
}

// policyMatches reports whether the certified authPolicy is the one the
// evidence's policy description gives, and whether the quoted values of the
// sealing PCRs satisfy it: the TPM would have unsealed the identity at the
// time of the quote (given its PIN, for a policy with one). The digests
// come from internal/tpmpolicy, the code sealing uses. For a
// PolicyAuthorizedPCR policy it also records the policy key's Name in res.
func policyMatches(e *Evidence, quoted map[int][]byte, authPolicy []byte, res *Result) bool {
	if len(e.SealedPCRs) == 0 {
		return false
	}
	values := make([][]byte, len(e.SealedPCRs))
	for i, p := range e.SealedPCRs {
		values[i] = quoted[p]
	}
	pcrDigest, err := tpmpolicy.PCR(tpm2.TPMAlgSHA256, e.SealedPCRs, values)
	if err != nil {
		return false
	}
	switch e.PolicyKind {
	case PolicyUnknown, PolicyPCR:
		// Version 1 evidence does not say; icn-agent sealed plain
		// PolicyPCR objects then.
		want, err := tpmpolicy.Sealed(tpmpolicy.KindPCR, pcrDigest, nil, e.PolicyPIN)
		return err == nil && bytes.Equal(want, authPolicy)
	case PolicyAuthorizedPCR:
		signer, _, err := parseTPM2BPublic(e.PolicySigner)
		if err != nil {
			return false
		}
		name, err := nameOf(signer)
		if err != nil {
			return false
		}
		want, err := tpmpolicy.Sealed(tpmpolicy.KindAuthorizedPCR, nil, name, e.PolicyPIN)
		if err != nil || !bytes.Equal(want, authPolicy) {
			return false
		}
		res.SealedPolicySigner = name
		// The object is bound to the key; it unseals only with values
		// the key approved.
		if e.ApprovedPolicy == nil || !bytes.Equal(e.ApprovedPolicy, pcrDigest) {
			return false
		}
		key, err := policyKey(signer)
		if err != nil {
			return false
		}
		return verifyECDSA(key, e.ApprovedPolicy, e.Approval) == nil
	}
	return false
}

// ed25519Key returns the Ed25519 key of an ssh-ed25519 public key.
func ed25519Key(k ssh.PublicKey) (ed25519.PublicKey, error) {
	ck, ok := k.(ssh.CryptoPublicKey)
	if !ok {
		return nil, errors.New("identity key is not an Ed25519 key")
	}
	pub, ok := ck.CryptoPublicKey().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("identity key is not an Ed25519 key")
	}
	return pub, nil
}
