package attest

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by Verify, ParseSSH and Evidence.UnmarshalJSON. Each check
// has its own sentinel; the error returned wraps it (errors.Is) and adds
// detail. Some errors wrap two sentinels: a problem in the certification of
// the sealed object wraps ErrBadCertify and, where one applies, the sentinel
// of the specific check (ErrBadMagic, ErrNonceMismatch, ...).
var (
	// ErrMalformed means the evidence is not well-formed: a field is
	// missing, too long, out of range or inconsistent with another, or a
	// TPM structure does not decode exactly.
	ErrMalformed = errors.New("attest: malformed evidence")
	// ErrUnsupportedVersion means the evidence is of a format version this
	// package does not know.
	ErrUnsupportedVersion = errors.New("attest: unsupported evidence version")
	// ErrWeakHash means a PCR bank, name algorithm or signature hash is not
	// SHA-256. SHA-1 in particular is refused.
	ErrWeakHash = errors.New("attest: hash algorithm is not sha256")
	// ErrBadAK means the attestation key's public area does not decode or
	// is not an ECC NIST P-256 ECDSA-SHA256 key of the icn-agent template.
	ErrBadAK = errors.New("attest: attestation key is not a P-256 ECDSA key of the expected template")
	// ErrAKNotRestricted means the attestation key's attributes are not
	// those of a restricted signing key that never leaves its TPM
	// (fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA,
	// restricted, sign, and nothing else). Only a restricted key is
	// guaranteed to sign nothing but data the TPM itself produced.
	ErrAKNotRestricted = errors.New("attest: attestation key is not a restricted signing key")
	// ErrUntrustedAK means the evidence was signed by an attestation key
	// other than the one pinned in VerifyOptions.
	ErrUntrustedAK = errors.New("attest: attestation key is not the trusted one")
	// ErrBadSignature means the quote's signature does not verify with the
	// attestation key.
	ErrBadSignature = errors.New("attest: quote signature does not verify")
	// ErrBadMagic means a TPMS_ATTEST does not start with TPM_GENERATED_VALUE,
	// so the TPM did not produce it.
	ErrBadMagic = errors.New("attest: attestation does not carry TPM_GENERATED_VALUE")
	// ErrBadType means a signed attestation is not of the expected type:
	// the quote is not a TPM_ST_ATTEST_QUOTE, or the certification not a
	// TPM_ST_ATTEST_SESSION_AUDIT. Some other TPM-signed structure was
	// presented in its place.
	ErrBadType = errors.New("attest: attestation is not of the expected type")
	// ErrNonceMismatch means the attestation's extraData is not
	// Binding(nonce, identity key): the evidence is stale, is for another
	// challenge, or is about another key.
	ErrNonceMismatch = errors.New("attest: attestation is not bound to this nonce and identity")
	// ErrSelectionMismatch means the PCR selection the TPM quoted is not
	// exactly the one the evidence claims.
	ErrSelectionMismatch = errors.New("attest: quoted PCR selection differs from the claimed one")
	// ErrPCRDigestMismatch means the claimed PCR values do not hash to the
	// digest the TPM quoted.
	ErrPCRDigestMismatch = errors.New("attest: PCR values do not match the quoted digest")
	// ErrUnexpectedPCR means a quoted PCR does not hold the value the
	// verifier expects. The error is an *UnexpectedPCRError naming the PCRs.
	ErrUnexpectedPCR = errors.New("attest: PCR value differs from the expected one")
	// ErrNoCertify means the evidence does not certify the sealed object
	// (the TPM refused TPM2_GetSessionAuditDigest, typically because the
	// endorsement hierarchy has a password). Set
	// VerifyOptions.AllowMissingCertify to accept such evidence.
	ErrNoCertify = errors.New("attest: evidence does not certify the sealed object")
	// ErrBadCertify means the certification of the sealed object does not
	// verify: bad signature or magic, wrong type, another nonce, another
	// signer or boot than the quote, or a sealed public area, SRK name or
	// name that does not match what the TPM attested.
	ErrBadCertify = errors.New("attest: certification of the sealed object does not verify")
	// ErrSealedAttributes means the certified sealed object is not bound to
	// its TPM and parent (fixedTPM, fixedParent) or can be used with a
	// password instead of its policy (userWithAuth), or is not a sealed
	// data object.
	ErrSealedAttributes = errors.New("attest: sealed object attributes are too weak")
	// ErrBadPossession means the identity key's signature over
	// PossessionMessage(nonce, quote) does not verify.
	ErrBadPossession = errors.New("attest: proof of possession does not verify")
	// ErrIdentityMismatch means the evidence is about another identity key
	// than VerifyOptions.IdentityKey.
	ErrIdentityMismatch = errors.New("attest: evidence is about another identity key")
)

// UnexpectedPCRError lists the PCRs whose quoted value differs from
// VerifyOptions.ExpectedPCRs (or that the verifier expects but the evidence
// does not quote). It matches ErrUnexpectedPCR with errors.Is.
type UnexpectedPCRError struct {
	// PCRs are the offending indexes, ascending.
	PCRs []int
	// Missing are the expected indexes the evidence does not quote.
	Missing []int
}

func (e *UnexpectedPCRError) Error() string {
	var parts []string
	switch len(e.PCRs) {
	case 0:
	case 1:
		parts = append(parts, "PCR "+joinInts(e.PCRs)+" differs from the expected value")
	default:
		parts = append(parts, "PCRs "+joinInts(e.PCRs)+" differ from the expected values")
	}
	switch len(e.Missing) {
	case 0:
	case 1:
		parts = append(parts, "PCR "+joinInts(e.Missing)+" is expected but not quoted")
	default:
		parts = append(parts, "PCRs "+joinInts(e.Missing)+" are expected but not quoted")
	}
	if len(parts) == 0 {
		return ErrUnexpectedPCR.Error()
	}
	return "attest: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrUnexpectedPCR) true.
func (e *UnexpectedPCRError) Is(target error) bool { return target == ErrUnexpectedPCR }

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// malformed returns an error wrapping ErrMalformed that names field.
func malformed(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
}
