package sealstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
)

// SeedSize is the size of an Ed25519 seed, the secret a blob seals.
const SeedSize = ed25519.SeedSize

// DefaultPCRs are the PCRs a new identity is bound to unless told
// otherwise: 0 (firmware) and 7 (Secure Boot policy).
var DefaultPCRs = []int{0, 7}

// TPM is what sealing needs of the TPM: exclusive use with the storage
// root key loaded. *tpmdev.TPM implements it.
type TPM interface {
	RunWithSRK(ctx context.Context, fn func(tpm transport.TPM, srk *tpmdev.SRK) error) error
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
)

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
}

// PublicKey returns the SSH public key of an Ed25519 seed. The expanded
// private key it computes on the way is wiped.
func PublicKey(seed []byte) (ssh.PublicKey, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("sealstore: seed is %d bytes, want %d", len(seed), SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	defer secmem.Wipe(priv)
	pub, err := ssh.NewPublicKey(ed25519.PublicKey(bytes.Clone(priv[SeedSize:])))
	if err != nil {
		return nil, fmt.Errorf("sealstore: %w", err)
	}
	return pub, nil
}

// sealedTemplate is the public area of a sealed seed: a KEYEDHASH object
// that only this TPM (fixedTPM) under this SRK (fixedParent) can load, whose
// data is ours (no sensitiveDataOrigin), usable only through its policy (no
// userWithAuth) and outside dictionary-attack counting (noDA: there is no
// password to guess).
func sealedTemplate(policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:        true,
			FixedParent:     true,
			NoDA:            true,
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
func Generate(ctx context.Context, t TPM, opts SealOptions) (*Blob, error) {
	buf, err := secmem.New(SeedSize)
	if err != nil {
		return nil, err
	}
	defer buf.Destroy()
	if _, err := rand.Read(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("sealstore: generate seed: %w", err)
	}
	return Seal(ctx, t, buf.Bytes(), opts)
}

// Seal seals seed, an Ed25519 seed, to the TPM under a PolicyPCR policy over
// the current values of opts.PCRs. The seed crosses to the TPM encrypted
// (a session salted to the SRK, with parameter encryption). Seal does not
// keep or wipe seed: that is the caller's.
func Seal(ctx context.Context, t TPM, seed []byte, opts SealOptions) (*Blob, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("sealstore: seed is %d bytes, want %d", len(seed), SeedSize)
	}
	if err := ValidName(opts.Name); err != nil {
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
	pub, err := PublicKey(seed)
	if err != nil {
		return nil, err
	}
	const bank = tpm2.TPMAlgSHA256

	var blob *Blob
	err = t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		// The policy fixes the PCR values read here. If a PCR moves between
		// the read and Create, the blob would never unseal: read again after
		// Create and start over if the update counter moved.
		for attempt := 0; ; attempt++ {
			values, counter, err := tpmdev.ReadPCRs(tpm, bank, pcrs)
			if err != nil {
				return err
			}
			policy := Policy{Kind: PolicyPCR, Bank: bank}
			for i, idx := range pcrs {
				policy.PCRs = append(policy.PCRs, PCRValue{Index: idx, Value: values[i]})
			}
			if policy.Digest, err = PolicyPCRDigest(bank, policy.PCRs); err != nil {
				return err
			}
			pubArea, priv, err := createSealedLocked(tpm, srk, seed, policy.Digest)
			if err != nil {
				return err
			}
			_, after, err := tpmdev.ReadPCRs(tpm, bank, pcrs)
			if err != nil {
				return err
			}
			if after != counter && attempt < 3 {
				continue
			}
			blob = &Blob{
				Name:      opts.Name,
				Comment:   opts.Comment,
				PublicKey: pub,
				Policy:    policy,
				SRKName:   bytes.Clone(srk.Name.Buffer),
				Public:    pubArea,
				Private:   priv,
				Created:   time.Now().UTC().Truncate(time.Second),
			}
			return nil
		}
	})
	if err != nil {
		return nil, fmt.Errorf("sealstore: seal %s: %w", opts.Name, err)
	}
	return blob, nil
}

// createSealedLocked runs TPM2_Create for a sealed object holding seed, in a
// one-off HMAC session salted to the SRK that encrypts the first command
// parameter (the sensitive data). It returns the marshalled TPM2B_PUBLIC and
// TPM2B_PRIVATE.
func createSealedLocked(tpm transport.TPM, srk *tpmdev.SRK, seed, policy []byte) (pub, priv []byte, err error) {
	sess := tpm2.HMAC(tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(srk.Handle, srk.Public),
		tpm2.AESEncryption(128, tpm2.EncryptIn))
	data := bytes.Clone(seed) // go-tpm encrypts the parameter buffer in place
	defer secmem.Wipe(data)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: sess},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: data}),
		}},
		InPublic: tpm2.New2B(sealedTemplate(policy)),
	}.Execute(tpm)
	if err != nil {
		return nil, nil, fmt.Errorf("create sealed object: %w", err)
	}
	return tpm2.Marshal(rsp.OutPublic), tpm2.Marshal(rsp.OutPrivate), nil
}

// Unseal asks the TPM for the seed sealed in b and writes it to dst, which
// must be SeedSize bytes (callers pass locked memory). The seed crosses
// back encrypted (a policy session salted to the SRK, with response
// encryption). If the PCRs no longer match, the error is a
// *PCRMismatchError (errors.Is ErrPCRMismatch) naming them.
//
// A cold unseal costs five TPM commands: Load, StartAuthSession, PolicyPCR,
// Unseal and FlushContext of the object (the one-off session ends with
// Unseal).
func Unseal(ctx context.Context, t TPM, b *Blob, dst []byte) error {
	if len(dst) != SeedSize {
		return fmt.Errorf("sealstore: unseal buffer is %d bytes, want %d", len(dst), SeedSize)
	}
	inPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b.Public)
	if err != nil {
		return fmt.Errorf("sealstore: %s: %w: public area: %v", b.Name, ErrMalformedBlob, err)
	}
	inPriv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](b.Private)
	if err != nil {
		return fmt.Errorf("sealstore: %s: %w: private area: %v", b.Name, ErrMalformedBlob, err)
	}
	err = t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		if !bytes.Equal(srk.Name.Buffer, b.SRKName) {
			return fmt.Errorf("%w: blob SRK %x, this TPM's SRK %x", ErrSRKMismatch, b.SRKName, srk.Name.Buffer)
		}
		load, err := tpm2.Load{
			ParentHandle: srk.AuthHandle(),
			InPrivate:    *inPriv,
			InPublic:     *inPub,
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("load sealed object: %w", err)
		}
		defer tpm2.FlushContext{FlushHandle: load.ObjectHandle}.Execute(tpm)
		obj := tpm2.NamedHandle{Handle: load.ObjectHandle, Name: load.Name}

		for attempt := 0; ; attempt++ {
			err := unsealLocked(tpm, srk, obj, b.Policy, dst)
			if errors.Is(err, tpm2.TPMRCPCRChanged) && attempt < 3 {
				continue // a PCR moved between PolicyPCR and Unseal
			}
			if errors.Is(err, tpm2.TPMRCPolicyFail) {
				return mismatchLocked(tpm, b)
			}
			return err
		}
	})
	if err != nil {
		var mm *PCRMismatchError
		if errors.As(err, &mm) {
			return err
		}
		return fmt.Errorf("sealstore: unseal %s: %w", b.Name, err)
	}
	return nil
}

// unsealLocked satisfies the object's PolicyPCR in a one-off policy session
// salted to the SRK and unseals, with the response encrypted.
func unsealLocked(tpm transport.TPM, srk *tpmdev.SRK, obj tpm2.NamedHandle, p Policy, dst []byte) error {
	sel := tpmdev.Selection(p.Bank, p.Indexes())
	sess := tpm2.Policy(tpm2.TPMAlgSHA256, 16,
		func(tpm transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
			if _, err := (tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}).Execute(tpm); err != nil {
				// go-tpm does not flush a session whose policy callback
				// fails: flush it here, or the TPM runs out of sessions.
				tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
				return err
			}
			return nil
		},
		tpm2.Salted(srk.Handle, srk.Public),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: obj.Handle, Name: obj.Name, Auth: sess},
	}.Execute(tpm)
	if err != nil {
		return err
	}
	defer secmem.Wipe(rsp.OutData.Buffer)
	if len(rsp.OutData.Buffer) != SeedSize {
		return fmt.Errorf("sealed object holds %d bytes, want %d", len(rsp.OutData.Buffer), SeedSize)
	}
	copy(dst, rsp.OutData.Buffer)
	return nil
}

// mismatchLocked reads the blob's PCRs and says which differ from the
// values recorded at seal time.
func mismatchLocked(tpm transport.TPM, b *Blob) error {
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

// CurrentPCRMismatch reports which of the blob's PCRs differ now from the
// values recorded at seal time, without unsealing. An empty result means
// the blob should unseal.
func CurrentPCRMismatch(ctx context.Context, t TPM, b *Blob) ([]int, error) {
	var out []int
	err := t.RunWithSRK(ctx, func(tpm transport.TPM, _ *tpmdev.SRK) error {
		values, _, err := tpmdev.ReadPCRs(tpm, b.Policy.Bank, b.Policy.Indexes())
		if err != nil {
			return err
		}
		out = out[:0]
		for i, pv := range b.Policy.PCRs {
			if !bytes.Equal(values[i], pv.Value) {
				out = append(out, pv.Index)
			}
		}
		return nil
	})
	return out, err
}
