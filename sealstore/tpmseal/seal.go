package tpmseal

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmpolicy"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/srk"
)

// DefaultPCRs are the PCRs a new identity is bound to unless told
// otherwise: 0 (firmware) and 7 (Secure Boot policy).
var DefaultPCRs = []int{0, 7}

// TPM is what sealing needs of the TPM: exclusive use of its transport
// for the duration of fn, with the storage root key loaded. icn-agent's
// own TPM layer implements it; another program implements it over its own
// go-tpm transport (see package srk). If fn fails because the SRK is no
// longer loaded, an implementation may load it again and call fn again.
type TPM interface {
	RunWithSRK(ctx context.Context, fn func(tpm transport.TPM, key *srk.Key) error) error
}

var _ TPM = (*tpmdev.TPM)(nil)

var (
	// ErrPCRMismatch means the PCRs a blob is bound to no longer hold the
	// values they had when it was sealed, so the TPM refuses to unseal it.
	// The error is a *PCRMismatchError that names the PCRs.
	ErrPCRMismatch = errors.New("sealstore: PCR values differ from those at seal time")
	// ErrSRKMismatch means a blob was sealed under another storage root
	// key: another TPM, or this one after it was cleared.
	ErrSRKMismatch = errors.New("sealstore: blob was sealed by another TPM (or before this TPM was cleared)")
	// ErrPINRequired means a blob is protected by a PIN and the unseal
	// was given none.
	ErrPINRequired = errors.New("sealstore: the identity is protected by a PIN and none was given")
	// ErrWrongPIN means the TPM refused the PIN (TPM_RC_AUTH_FAIL). The
	// TPM counted the failure towards its dictionary-attack lockout.
	ErrWrongPIN = errors.New("sealstore: wrong PIN")
	// ErrLockout means the TPM is in dictionary-attack lockout
	// (TPM_RC_LOCKOUT): after too many wrong PINs it refuses every
	// PIN-protected object, even with the right PIN, until it recovers
	// (one failure is forgotten per recovery interval) or its lockout is
	// reset with the lockout hierarchy's authorization.
	ErrLockout = errors.New("sealstore: the TPM is in dictionary-attack lockout after too many wrong PINs")
)

// pinError reports a PIN the TPM refused (ErrWrongPIN) or could not check
// (ErrLockout), wrapping both the sentinel and the TPM's response code.
type pinError struct {
	name     string
	sentinel error
	tpm      error
}

func (e *pinError) Error() string {
	return fmt.Sprintf("sealstore: %s: %s (%v)", e.name, strings.TrimPrefix(e.sentinel.Error(), "sealstore: "), e.tpm)
}

func (e *pinError) Unwrap() []error { return []error{e.sentinel, e.tpm} }

// PCRMismatchError says which PCRs differ from the values recorded in a
// blob at seal time. It matches ErrPCRMismatch with errors.Is.
type PCRMismatchError struct {
	Name string
	// PCRs lists the indexes whose current value differs, ascending.
	PCRs []int
}

func (e *PCRMismatchError) Error() string {
	if len(e.PCRs) == 0 {
		return fmt.Sprintf("sealstore: %s: TPM policy check failed although the recorded PCR values match (the blob's policy may be damaged)", e.Name)
	}
	s := make([]string, len(e.PCRs))
	for i, p := range e.PCRs {
		s[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf("sealstore: %s: PCR %s changed since it was sealed; the TPM will not unseal it (reseal it from a backup, or restore the platform state)", e.Name, strings.Join(s, ", "))
}

// Is makes errors.Is(err, ErrPCRMismatch) true.
func (e *PCRMismatchError) Is(target error) bool { return target == ErrPCRMismatch }

// SealOptions describe a new sealed identity.
type SealOptions struct {
	Name    string
	Comment string
	// PCRs to bind to, in the SHA-256 bank. Nil means DefaultPCRs.
	PCRs []int
	// Signer, if set, makes the policy PolicyAuthorizedPCR with this
	// policy signing key: the object unseals under the PCR values of any
	// policy the key signs (see SignedPolicy), and no PCR value is fixed
	// now. If nil, the policy is PolicyPCR over the PCRs' current values.
	Signer *ecdsa.PublicKey
	// PIN, if set, also protects the object with a PIN: its policy ends
	// in TPM2_PolicyAuthValue, its authValue is PINAuthValue(PIN), and
	// noDA is clear so that the TPM's dictionary-attack protection
	// counts wrong PINs. Seal does not keep or wipe it.
	PIN []byte
}

// MaxPINSize bounds a PIN, in bytes.
const MaxPINSize = 1024

// PINAuthValue returns the TPM authValue of an object protected by pin:
// the SHA-256 digest of the PIN, or, if that digest contains a zero byte,
// the SHA-256 digest of that digest, and so on until a digest without a
// zero byte (seven PINs in eight take the first digest). A TPM ignores
// trailing zero bytes of an authValue, and go-tpm v0.9.8 cuts the HMAC
// key at the first zero byte and does not trim it for parameter
// encryption: a value without zero bytes is used the same way by both.
// The caller should wipe the result after use.
func PINAuthValue(pin []byte) []byte {
	h := new([sha256.Size]byte)
	pinAuthValue(h, pin)
	return h[:]
}

// pinAuthValue writes PINAuthValue(pin) to out, which the unseal and
// sealing sessions point into their locked page: the digests are computed
// on the stack (sha256.Sum256 keeps its state there) and never reach the
// heap.
func pinAuthValue(out *[sha256.Size]byte, pin []byte) {
	*out = sha256.Sum256(pin)
	for bytes.IndexByte(out[:], 0) >= 0 {
		*out = sha256.Sum256(out[:])
	}
}

// checkPIN checks a PIN's size.
func checkPIN(pin []byte) error {
	if len(pin) > MaxPINSize {
		return fmt.Errorf("sealstore: PIN is %d bytes, at most %d", len(pin), MaxPINSize)
	}
	return nil
}

// sealedTemplate is the public area of a sealed seed: a KEYEDHASH object
// that only this TPM (fixedTPM) under this SRK (fixedParent) can load, whose
// data is ours (no sensitiveDataOrigin), usable only through its policy (no
// userWithAuth). Without a PIN it is outside dictionary-attack counting
// (noDA: there is no password to guess); with one, the TPM counts wrong
// PINs and locks out after too many.
func sealedTemplate(policy []byte, pin bool) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:        true,
			FixedParent:     true,
			NoDA:            !pin,
			AdminWithPolicy: true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
}

// Generate creates a new Ed25519 identity from crypto/rand and seals its
// seed. The seed exists in clear only in locked memory, and is wiped before
// Generate returns.
func Generate(ctx context.Context, t TPM, opts SealOptions) (*sealstore.Blob, error) {
	buf, err := secmem.New(sealstore.SeedSize)
	if err != nil {
		return nil, err
	}
	defer buf.Destroy()
	if _, err := rand.Read(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("sealstore: generate seed: %w", err)
	}
	return Seal(ctx, t, buf.Bytes(), opts)
}

// Seal seals seed, an Ed25519 seed, to the TPM under a PolicyPCR policy
// over the current values of opts.PCRs, or, with opts.Signer, under a
// PolicyAuthorizedPCR policy selecting opts.PCRs; with opts.PIN, the
// policy also needs the PIN. The seed (and the PIN's authValue) cross to
// the TPM encrypted (a session salted to the SRK, with parameter
// encryption), and are in clear only in seed and in the session's locked
// page (see seal_session.go): pass seed in locked memory. Seal does not
// keep or wipe seed: that is the caller's.
func Seal(ctx context.Context, t TPM, seed []byte, opts SealOptions) (*sealstore.Blob, error) {
	if len(seed) != sealstore.SeedSize {
		return nil, fmt.Errorf("sealstore: seed is %d bytes, want %d", len(seed), sealstore.SeedSize)
	}
	if err := sealstore.ValidName(opts.Name); err != nil {
		return nil, err
	}
	if err := checkPIN(opts.PIN); err != nil {
		return nil, err
	}
	pcrs := opts.PCRs
	if pcrs == nil {
		pcrs = DefaultPCRs
	}
	pcrs = slices.Sorted(slices.Values(pcrs))
	if len(slices.Compact(slices.Clone(pcrs))) != len(pcrs) || len(pcrs) == 0 {
		return nil, fmt.Errorf("sealstore: PCR list %v must be non-empty without duplicates", opts.PCRs)
	}
	for _, p := range pcrs {
		if p < 0 || p >= tpmdev.NumPCRs {
			return nil, fmt.Errorf("sealstore: PCR %d out of range 0-%d", p, tpmdev.NumPCRs-1)
		}
	}
	pub, err := sealstore.PublicKey(seed)
	if err != nil {
		return nil, err
	}
	const bank = tpm2.TPMAlgSHA256
	pin := len(opts.PIN) > 0
	var signer *sealstore.PolicyKey
	if opts.Signer != nil {
		if signer, err = sealstore.NewPolicyKey(opts.Signer); err != nil {
			return nil, err
		}
	}

	var blob *sealstore.Blob
	err = t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		newBlob := func(policy sealstore.Policy, pubArea, priv []byte) *sealstore.Blob {
			return &sealstore.Blob{
				Name:      opts.Name,
				Comment:   opts.Comment,
				PublicKey: pub,
				Policy:    policy,
				SRKName:   bytes.Clone(srk.Name.Buffer),
				Public:    pubArea,
				Private:   priv,
				Created:   time.Now().UTC().Truncate(time.Second),
			}
		}
		if signer != nil {
			// No PCR value is fixed: only the selection and the key.
			policy := sealstore.Policy{Kind: sealstore.PolicyAuthorizedPCR, PIN: pin, Bank: bank, Signer: signer.PolicyKeyPublic()}
			for _, idx := range pcrs {
				policy.PCRs = append(policy.PCRs, sealstore.PCRValue{Index: idx})
			}
			var err error
			if policy.Digest, err = sealstore.PolicyDigest(policy); err != nil {
				return err
			}
			pubArea, priv, err := createSealedLocked(tpm, srk, seed, policy.Digest, opts.PIN)
			if err != nil {
				return err
			}
			blob = newBlob(policy, pubArea, priv)
			return nil
		}
		// The policy fixes the PCR values read here. If one of them moves
		// between the read and Create, the blob would never unseal: read
		// them again after Create and start over if they differ.
		for attempt := 0; ; attempt++ {
			values, _, err := tpmdev.ReadPCRs(tpm, bank, pcrs)
			if err != nil {
				return err
			}
			policy := sealstore.Policy{Kind: sealstore.PolicyPCR, PIN: pin, Bank: bank}
			for i, idx := range pcrs {
				policy.PCRs = append(policy.PCRs, sealstore.PCRValue{Index: idx, Value: values[i]})
			}
			if policy.Digest, err = sealstore.PolicyDigest(policy); err != nil {
				return err
			}
			pubArea, priv, err := createSealedLocked(tpm, srk, seed, policy.Digest, opts.PIN)
			if err != nil {
				return err
			}
			after, _, err := tpmdev.ReadPCRs(tpm, bank, pcrs)
			if err != nil {
				return err
			}
			if !slices.EqualFunc(values, after, bytes.Equal) {
				// A selected PCR moved meanwhile: this blob would
				// never unseal. (Other PCRs moving does not matter.)
				if attempt < 3 {
					continue
				}
				return fmt.Errorf("PCRs %v kept changing while sealing; try again when the platform is idle", pcrs)
			}
			blob = newBlob(policy, pubArea, priv)
			return nil
		}
	})
	if err != nil {
		return nil, fmt.Errorf("sealstore: seal %s: %w", opts.Name, err)
	}
	return blob, nil
}

// UnsealOptions are what unsealing needs besides the blob, for blobs that
// need more than the platform state.
type UnsealOptions struct {
	// PIN is the identity's PIN, for a blob whose Policy.PIN is set;
	// ignored otherwise. UnsealWith does not keep or wipe it.
	PIN []byte
	// Policies are the signed policies to choose from, for a blob with a
	// PolicyAuthorizedPCR policy (see Store.SignedPolicies); ignored
	// otherwise. The one signed by the blob's key for the PCRs' current
	// values is used.
	Policies []*sealstore.SignedPolicy
}

// Unseal asks the TPM for the seed sealed in b and writes it to dst, which
// must be SeedSize bytes (callers pass locked memory). It is UnsealWith
// without options: blobs that need a PIN or signed policies fail.
//
// A cold unseal of a PolicyPCR blob without PIN costs five TPM commands:
// Load, StartAuthSession, PolicyPCR, Unseal and FlushContext of the object
// (the one-off session ends with Unseal).
func Unseal(ctx context.Context, t TPM, b *sealstore.Blob, dst []byte) error {
	return UnsealWith(ctx, t, b, dst, UnsealOptions{})
}

// errPCRMoved means a PCR changed between reading it and using it in a
// policy session: the attempt is repeated.
var errPCRMoved = errors.New("a PCR changed during the unseal")

// UnsealWith asks the TPM for the seed sealed in b and writes it to dst,
// which must be SeedSize bytes (callers pass locked memory). The seed
// crosses back encrypted (a policy session salted to the SRK, with
// response encryption) and is decrypted in dst: it is in clear nowhere
// else, and the session's keys (the PIN's authValue among them) live in
// a locked page wiped when the session ends (see unseal_session.go).
//
// The policy session runs TPM2_PolicyPCR with the PCRs' current values,
// then for a PolicyAuthorizedPCR blob TPM2_PolicyAuthorize with the signed
// policy for those values (its signature verified by the TPM with the
// policy key loaded from the blob by TPM2_LoadExternal, which yields the
// ticket TPM2_PolicyAuthorize checks), then for a PIN blob
// TPM2_PolicyAuthValue, with the session's HMAC keyed by the PIN's
// authValue. Every object and session it loads is flushed on every path.
//
// Errors: a *PCRMismatchError (ErrPCRMismatch) naming the PCRs that moved
// for a PolicyPCR blob; a *MissingPolicyError (ErrNoSignedPolicy) naming
// the values to sign for a PolicyAuthorizedPCR blob; ErrPINRequired,
// ErrWrongPIN (the TPM counted a failure) or ErrLockout for a PIN blob;
// ErrSRKMismatch for a blob of another TPM. A wrong PIN is never retried.
func UnsealWith(ctx context.Context, t TPM, b *sealstore.Blob, dst []byte, opts UnsealOptions) error {
	if len(dst) != sealstore.SeedSize {
		return fmt.Errorf("sealstore: unseal buffer is %d bytes, want %d", len(dst), sealstore.SeedSize)
	}
	inPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b.Public)
	if err != nil {
		return fmt.Errorf("sealstore: %s: %w: public area: %v", b.Name, sealstore.ErrMalformedBlob, err)
	}
	inPriv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](b.Private)
	if err != nil {
		return fmt.Errorf("sealstore: %s: %w: private area: %v", b.Name, sealstore.ErrMalformedBlob, err)
	}
	u := unsealer{b: b, pub: inPub, priv: inPriv, policies: opts.Policies, dst: dst}
	if b.Policy.PIN {
		if len(opts.PIN) == 0 {
			return fmt.Errorf("sealstore: unseal %s: %w", b.Name, ErrPINRequired)
		}
		if err := checkPIN(opts.PIN); err != nil {
			return err
		}
		u.pin = opts.PIN
	}
	if b.Policy.Kind == sealstore.PolicyAuthorizedPCR {
		if u.signer, err = b.Policy.SignerKey(); err != nil {
			return fmt.Errorf("sealstore: %s: %w", b.Name, err)
		}
	}
	err = t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		if !bytes.Equal(srk.Name.Buffer, b.SRKName) {
			return fmt.Errorf("%w: blob SRK %x, this TPM's SRK %x", ErrSRKMismatch, b.SRKName, srk.Name.Buffer)
		}
		for attempt := 0; ; attempt++ {
			err := u.once(tpm, srk)
			if (errors.Is(err, errPCRMoved) || errors.Is(err, tpm2.TPMRCPCRChanged)) && attempt < 3 {
				continue // a PCR moved between reading it and Unseal
			}
			switch {
			case errors.Is(err, tpm2.TPMRCPolicyFail) && b.Policy.Kind == sealstore.PolicyPCR:
				return mismatchLocked(tpm, b)
			case errors.Is(err, tpm2.TPMRCAuthFail) && b.Policy.PIN:
				return &pinError{name: b.Name, sentinel: ErrWrongPIN, tpm: err}
			case errors.Is(err, tpm2.TPMRCLockout) && b.Policy.PIN:
				return &pinError{name: b.Name, sentinel: ErrLockout, tpm: err}
			}
			return err
		}
	})
	if err != nil {
		var mm *PCRMismatchError
		var mp *sealstore.MissingPolicyError
		var pe *pinError
		if errors.As(err, &mm) || errors.As(err, &mp) || errors.As(err, &pe) {
			return err
		}
		return fmt.Errorf("sealstore: unseal %s: %w", b.Name, err)
	}
	return nil
}

// unsealer is one UnsealWith call's state.
type unsealer struct {
	b        *sealstore.Blob
	pub      *tpm2.TPM2BPublic
	priv     *tpm2.TPM2BPrivate
	signer   *sealstore.PolicyKey // PolicyAuthorizedPCR only
	policies []*sealstore.SignedPolicy
	pin      []byte // the PIN, PIN blobs only (the caller's; not wiped here)
	dst      []byte
}

// once makes one unseal attempt: Load, then the policy session
// (startSession, the policy commands, TPM2_Unseal by hand). For a
// PolicyAuthorizedPCR blob the signed policy's ticket is made first, so
// that the policy key and the sealed object are never loaded together: a
// TPM may hold as few as three objects, and the SRK and an attestation key
// may be two of them.
func (u *unsealer) once(tpm transport.TPM, srk *tpmdev.SRK) error {
	var approved *sealstore.SignedPolicy
	var ticket *tpm2.TPMTTKVerified
	if u.signer != nil {
		values, _, err := tpmdev.ReadPCRs(tpm, u.b.Policy.Bank, u.b.Policy.Indexes())
		if err != nil {
			return err
		}
		current := make([]sealstore.PCRValue, len(values))
		for i, idx := range u.b.Policy.Indexes() {
			current[i] = sealstore.PCRValue{Index: idx, Value: values[i]}
		}
		if approved, err = sealstore.FindSignedPolicy(u.b, current, u.policies); err != nil {
			return err
		}
		if ticket, err = verifyPolicyLocked(tpm, u.signer, approved); err != nil {
			return err
		}
	}
	load, err := tpm2.Load{
		ParentHandle: srk.AuthHandle(),
		InPrivate:    *u.priv,
		InPublic:     *u.pub,
	}.Execute(tpm)
	if err != nil {
		return fmt.Errorf("load sealed object: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: load.ObjectHandle}.Execute(tpm)

	p := u.b.Policy
	sel := tpmdev.Selection(p.Bank, p.Indexes())
	return unsealInSession(tpm, srk, u.pin, func(h tpm2.TPMISHPolicy) error {
		return policyLocked(tpm, h, sel, p.PIN, approved, u.signer, ticket)
	}, load.ObjectHandle, load.Name, u.dst)
}

// unsealInSession unseals the loaded sealed object (handle, name) into dst
// (locked memory, as long as the data) in a one-off policy session salted
// to the SRK, with response encryption, run by hand (startSession, then
// policy, which runs the object's policy commands in the session, then
// TPM2_Unseal). pin is the PIN of a PIN object, nil otherwise.
func unsealInSession(tpm transport.TPM, srk *tpmdev.SRK, pin []byte, policy func(tpm2.TPMISHPolicy) error, handle tpm2.TPMHandle, name tpm2.TPM2BName, dst []byte) error {
	sess, err := startSession(tpm, srk, tpm2.TPMSEPolicy, pin)
	if err != nil {
		return err
	}
	// Flushes the session unless the TPM did (it does once Unseal is
	// authorized), and wipes the session's keys.
	defer sess.close(tpm)
	if err := policy(tpm2.TPMISHPolicy(sess.handle)); err != nil {
		return fmt.Errorf("executing policy: %w", err)
	}
	return sess.unseal(tpm, handle, name, dst)
}

// policyLocked runs the policy commands of a sealed object's policy in
// session h: PolicyPCR with the current values, PolicyAuthorize with the
// approved signed policy (PolicyAuthorizedPCR), PolicyAuthValue (PIN).
func policyLocked(tpm transport.TPM, h tpm2.TPMISHPolicy, sel tpm2.TPMLPCRSelection, pin bool, approved *sealstore.SignedPolicy, signer *sealstore.PolicyKey, ticket *tpm2.TPMTTKVerified) error {
	if _, err := (tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}).Execute(tpm); err != nil {
		return err
	}
	if approved != nil {
		_, err := tpm2.PolicyAuthorize{
			PolicySession:  h,
			ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved.Digest},
			PolicyRef:      tpm2.TPM2BDigest{},
			KeySign:        tpm2.TPM2BName{Buffer: signer.Name},
			CheckTicket:    *ticket,
		}.Execute(tpm)
		var f1 tpm2.TPMFmt1Error
		if errors.Is(err, tpm2.TPMRCValue) && errors.As(err, &f1) {
			if isParam, idx := f1.Parameter(); isParam && idx == 1 {
				// The session's PolicyPCR digest is not the approved
				// policy: the PCRs moved since they were read.
				return fmt.Errorf("%w: %w", errPCRMoved, err)
			}
		}
		if err != nil {
			return fmt.Errorf("policy authorize: %w", err)
		}
	}
	if pin {
		if _, err := (tpm2.PolicyAuthValue{PolicySession: h}).Execute(tpm); err != nil {
			return err
		}
	}
	return nil
}

// verifyPolicyLocked has the TPM check the signature of approved with the
// policy key: it loads the key's public area (TPM2_LoadExternal, in the
// owner hierarchy: a ticket from a key in the null hierarchy is a null
// ticket, which TPM2_PolicyAuthorize refuses), verifies the signature over
// aHash and returns the ticket, after flushing the key.
func verifyPolicyLocked(tpm transport.TPM, key *sealstore.PolicyKey, approved *sealstore.SignedPolicy) (*tpm2.TPMTTKVerified, error) {
	ext, err := tpm2.LoadExternal{
		InPublic:  tpm2.New2B(key.TPMPublic),
		Hierarchy: tpm2.TPMRHOwner,
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("load policy key: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: ext.ObjectHandle}.Execute(tpm)
	if !bytes.Equal(ext.Name.Buffer, key.Name) {
		return nil, fmt.Errorf("the TPM names the policy key %x, not %x", ext.Name.Buffer, key.Name)
	}
	rsp, err := tpm2.VerifySignature{
		KeyHandle: tpm2.NamedHandle{Handle: ext.ObjectHandle, Name: ext.Name},
		Digest:    tpm2.TPM2BDigest{Buffer: tpmpolicy.ApprovalHash(approved.Digest)},
		Signature: approved.TPMSignature(),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("verify signed policy %s: %w", approved.FileName(), err)
	}
	return &rsp.Validation, nil
}

// mismatchLocked reads the blob's PCRs and says which differ from the
// values recorded at seal time.
func mismatchLocked(tpm transport.TPM, b *sealstore.Blob) error {
	idx := b.Policy.Indexes()
	values, _, err := tpmdev.ReadPCRs(tpm, b.Policy.Bank, idx)
	if err != nil {
		return fmt.Errorf("%w (and reading the PCRs failed: %v)", ErrPCRMismatch, err)
	}
	e := &PCRMismatchError{Name: b.Name}
	for i, pv := range b.Policy.PCRs {
		if !bytes.Equal(values[i], pv.Value) {
			e.PCRs = append(e.PCRs, pv.Index)
		}
	}
	return e
}

// CheckPolicy says, without unsealing and without a PIN, whether b's
// policy can be satisfied in the current platform state: nil, or the error
// UnsealWith would return (ErrSRKMismatch, a *PCRMismatchError, or a
// *MissingPolicyError when none of policies approves the current values
// of a PolicyAuthorizedPCR blob). Callers use it before asking for a PIN
// that could not help.
func CheckPolicy(ctx context.Context, t TPM, b *sealstore.Blob, policies []*sealstore.SignedPolicy) error {
	return t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		if !bytes.Equal(srk.Name.Buffer, b.SRKName) {
			return fmt.Errorf("sealstore: %s: %w", b.Name, ErrSRKMismatch)
		}
		values, _, err := tpmdev.ReadPCRs(tpm, b.Policy.Bank, b.Policy.Indexes())
		if err != nil {
			return err
		}
		current := make([]sealstore.PCRValue, len(values))
		e := &PCRMismatchError{Name: b.Name}
		for i, pv := range b.Policy.PCRs {
			current[i] = sealstore.PCRValue{Index: pv.Index, Value: values[i]}
			if b.Policy.HasValues() && !bytes.Equal(values[i], pv.Value) {
				e.PCRs = append(e.PCRs, pv.Index)
			}
		}
		if len(e.PCRs) > 0 {
			return e
		}
		if b.Policy.Kind == sealstore.PolicyAuthorizedPCR {
			_, err := sealstore.FindSignedPolicy(b, current, policies)
			return err
		}
		return nil
	})
}
