package sealstore

// TPM-to-TPM migration: wrapping a secret so that exactly one other TPM can
// unseal it, without the secret ever being on disk in clear.
//
// A sealed blob is bound to its TPM for good: the object has fixedTPM and
// fixedParent set, so not even the TPM that made it will duplicate it. To
// move a seed to another TPM, the source unseals it and wraps it again, in
// software, as a TPM 2.0 duplication blob for the target's storage root key
// (TPM 2.0 Part 1, "Protected Storage: Duplication"):
//
//   - The wrapped object is a sealed-data object (keyedHash, null scheme)
//     holding the data, with a fresh random obfuscation value. Its authPolicy
//     is TPM2_PolicyCommandCode(TPM_CC_Unseal) ([DuplicatePolicy]): with
//     userWithAuth clear and adminWithPolicy set, the only thing the object
//     can ever be used for is TPM2_Unseal in a policy session; TPM2_Duplicate
//     (which needs PolicyCommandCode(TPM_CC_Duplicate) in its policy) and
//     TPM2_ObjectChangeAuth are impossible. fixedTPM and fixedParent are
//     clear because TPM2_Import refuses objects with either set
//     (TPM_RC_ATTRIBUTES).
//   - The outer wrapper protects the object's TPM2B_SENSITIVE with a seed
//     that only the target can recover: an ephemeral P-256 key agreement
//     with the target SRK's public key (the ciphertext is the ephemeral
//     point, the "encrypted seed"). From that seed the TPM's KDFa derives an
//     AES-128-CFB key (label "STORAGE", context the object's Name) and an
//     HMAC key (label "INTEGRITY"); the HMAC covers the encrypted sensitive
//     and the Name, so the public area (attributes, policy, unique) cannot be
//     changed either.
//
// TPM2_Import on the target verifies the HMAC with the seed it recovers with
// its SRK's private key, which never leaves that TPM. Any other TPM recovers
// a different seed and fails the check with TPM_RC_INTEGRITY; so does the
// right TPM given an altered file. The imported object is never written
// anywhere: tpmseal.UnsealDuplicate imports, loads, unseals and flushes it in one
// go, and the caller seals the data again, as an ordinary fixedTPM blob
// under the target's PCR policy.
//
// The duplicate is created in software ([NewDuplicate]) rather than with
// TPM2_Duplicate, because the source object is not duplicable; the data is
// in the source process's locked memory for the moment it takes to wrap it,
// exactly as it is for every signature, and the wrapping itself is done in
// locked memory too (no plaintext copy on the heap).

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/internal/edlocked"
	"github.com/icn/icn-agent/internal/seccrypt"
	"github.com/icn/icn-agent/internal/secmem"
)

// MaxDuplicateData is the most data a duplicate can carry: the TPM's
// MAX_SYM_DATA, the size limit of a sealed-data object.
const MaxDuplicateData = 128

var (
	// ErrNotForThisTPM means a duplicate was wrapped for another TPM's
	// storage root key (or for this TPM before it was cleared).
	ErrNotForThisTPM = errors.New("sealstore: wrapped for another TPM")
	// ErrDuplicateRejected means the TPM refused to import a duplicate:
	// its integrity check failed, so it was wrapped for another TPM or
	// altered after wrapping. The error also wraps the TPM's response
	// code (tpm2.TPMRCIntegrity in both cases).
	ErrDuplicateRejected = errors.New("sealstore: the TPM rejected the wrapped object (made for another TPM, or altered)")
	// ErrNotSRK is wrapped by errors about a public key that is not a TCG
	// ECC P-256 storage root key.
	ErrNotSRK = errors.New("sealstore: not a TCG ECC P-256 storage root key")
)

// SRKPublic is the public half of a TPM's storage root key: what another
// machine needs to wrap data that only this TPM can unwrap. It is not
// secret.
type SRKPublic struct {
	// Public is the SRK's public area.
	Public tpm2.TPMTPublic
	// Name is the SRK's TPM Name: the 2-byte name algorithm (SHA-256)
	// followed by the SHA-256 digest of the marshalled public area, 34
	// bytes. It identifies the TPM (until its owner hierarchy is cleared).
	Name []byte
}

// NewSRKPublic checks that pub is a storage root key made from the TCG ECC
// P-256 template (the only kind icn-agent uses: restricted decryption key,
// AES-128-CFB, NIST P-256, whatever its unique point) with a valid public
// point, and returns it with its Name. Errors wrap ErrNotSRK.
func NewSRKPublic(pub tpm2.TPMTPublic) (*SRKPublic, error) {
	a, b := pub, tpm2.ECCSRKTemplate
	a.Unique, b.Unique = tpm2.TPMUPublicID{}, tpm2.TPMUPublicID{}
	am, err := marshalPublic(&a)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSRK, err)
	}
	if !bytes.Equal(am, tpm2.Marshal(b)) {
		return nil, fmt.Errorf("%w: the public area does not match the template", ErrNotSRK)
	}
	// Checks that the point is on the curve.
	if _, err := tpm2.ImportEncapsulationKey(&pub); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSRK, err)
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSRK, err)
	}
	return &SRKPublic{Public: pub, Name: bytes.Clone(name.Buffer)}, nil
}

// DuplicatePolicy returns the authPolicy of a wrapped object:
// TPM2_PolicyCommandCode(TPM_CC_Unseal) from the empty SHA-256 policy,
//
//	SHA256(0^32 || TPM_CC_PolicyCommandCode || TPM_CC_Unseal)
func DuplicatePolicy() []byte {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		panic(err) // SHA-256 is always available
	}
	if err := (tpm2.PolicyCommandCode{Code: tpm2.TPMCCUnseal}).Update(calc); err != nil {
		panic(err) // a fixed, marshallable input
	}
	return calc.Hash().Digest
}

// duplicateTemplate is the public area of a wrapped object whose unique
// field (SHA-256 of obfuscation value and data) is unique.
func duplicateTemplate(unique []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			// fixedTPM and fixedParent must be clear for TPM2_Import.
			NoDA:            true,
			AdminWithPolicy: true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: DuplicatePolicy()},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique}),
	}
}

// Duplicate is data wrapped for one TPM's storage root key, in the three
// parts TPM2_Import takes. None of them is secret without that TPM. Each is
// the marshalled TPM structure, size prefix included, as tpm2-tools writes
// them (tpm2_import -u, -i, -s).
type Duplicate struct {
	// ParentName is the Name of the storage root key the data is wrapped
	// for (see SRKPublic).
	ParentName []byte
	// Public is the wrapped object's TPM2B_PUBLIC.
	Public []byte
	// Private is the TPM2B_PRIVATE holding the outer wrapper: the HMAC
	// and the encrypted TPM2B_SENSITIVE.
	Private []byte
	// EncryptedSeed is the TPM2B_ENCRYPTED_SECRET from which the target
	// recovers the wrapper's seed: an ephemeral P-256 point.
	EncryptedSeed []byte
}

// NewDuplicate wraps data (1 to MaxDuplicateData bytes, the caller's
// locked memory) for the TPM whose storage root key is target; see the file
// comment for the construction. It needs no TPM. The wrapping is done by
// hand, in one locked page (secmem) wiped before NewDuplicate returns, in
// the byte format of go-tpm's tpm2.CreateDuplicate (which would copy the
// sensitive area into heap buffers nobody wipes):
//
//   - The TPM2B_SENSITIVE (keyedHash type, empty authValue, the
//     obfuscation value read from crypto/rand straight into the page, the
//     data) is laid out in the page; the unique field, SHA-256(obfuscation
//     || data), is hashed there with sha256.Sum256, whose state stays on
//     the stack (scrubbed: the work runs inside edlocked.Deep).
//   - An ephemeral P-256 key agreement with the SRK's public point
//     (crypto/ecdh) gives Z, copied into the page; the copy crypto/ecdh
//     returns is wiped at once. seed = KDFe(SHA-256, Z, "DUPLICATE",
//     ephemeral X, SRK X, 256); the encrypted seed is the ephemeral point.
//   - The AES-128 key is KDFa(SHA-256, seed, "STORAGE", Name, nil, 128),
//     the HMAC key KDFa(SHA-256, seed, "INTEGRITY", nil, nil, 256) (Part 1,
//     22 "Protected Storage" and 23.3 "Duplication"), both in the page.
//   - The TPM2B_SENSITIVE is encrypted in place with AES-128-CFB and a zero
//     IV (internal/seccrypt: feedback and key stream in the page, the key
//     schedule wiped), and only then copied out; outerHMAC =
//     HMAC(integrity key, encrypted sensitive || Name), computed in the page.
//     The private part is TPM2B(outerHMAC) || encrypted sensitive.
//
// What crypto/ecdh keeps is out of reach: the ephemeral private key holds
// its scalar in unexported heap memory (ecdh.PrivateKey and the FIPS
// module's key under it), and the scalar multiplication works on field
// elements it allocates itself; all are left to the garbage collector.
// They give back Z, hence the wrapper's keys, for this one duplicate only;
// see docs/security.md.
func NewDuplicate(target *SRKPublic, data []byte) (*Duplicate, error) {
	if target == nil {
		return nil, errors.New("sealstore: wrap: no target storage root key")
	}
	if len(data) == 0 || len(data) > MaxDuplicateData {
		return nil, fmt.Errorf("sealstore: wrap: %d bytes of data, want 1 to %d", len(data), MaxDuplicateData)
	}
	// The Name is recomputed from the public area checked here, never
	// taken from the caller.
	target, err := NewSRKPublic(target.Public)
	if err != nil {
		return nil, fmt.Errorf("sealstore: wrap: %w", err)
	}
	params, err := target.Public.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("sealstore: wrap: %w", err)
	}
	point, err := target.Public.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("sealstore: wrap: %w", err)
	}
	srkPub, err := tpm2.ECDHPub(params, point)
	if err != nil {
		return nil, fmt.Errorf("sealstore: wrap: %w", err)
	}
	sec, err := secmem.New(dupPage)
	if err != nil {
		return nil, fmt.Errorf("sealstore: wrap: %w", err)
	}
	defer sec.Destroy()
	var d *Duplicate
	edlocked.Deep(func() { d, err = wrapLocked(sec.Bytes(), srkPub, target.Name, data) })
	if err != nil {
		return nil, fmt.Errorf("sealstore: wrap: %w", err)
	}
	return d, nil
}

// Layout of the locked page NewDuplicate works in.
const (
	dupOffZ         = 0   // 32 bytes: the ECDH shared secret (x coordinate)
	dupOffSeed      = 32  // 32 bytes: KDFe's seed
	dupOffAESKey    = 64  // 16 bytes: KDFa "STORAGE"
	dupOffHMACKey   = 96  // 32 bytes: KDFa "INTEGRITY"
	dupOffCFB       = 128 // 32 bytes: CFB feedback and key stream
	dupOffInner     = 160 // 32 bytes: inner HMAC digest
	dupOffSensitive = 256 // up to 170 bytes: the TPM2B_SENSITIVE
	dupOffScratch   = 512 // hash and HMAC inputs
	dupPage         = 4096
)

// wrapLocked builds the duplicate of data for the SRK whose public point
// is srkPub and Name is parentName, with every secret in page (locked
// memory), which it clears. It runs inside edlocked.Deep.
func wrapLocked(page []byte, srkPub *ecdh.PublicKey, parentName, data []byte) (*Duplicate, error) {
	defer clear(page)
	scratch := page[dupOffScratch:]
	inner := page[dupOffInner : dupOffInner+sha256Size]

	// TPM2B_SENSITIVE: size, then TPMT_SENSITIVE: sensitiveType
	// (keyedHash), authValue (empty), seedValue (the obfuscation value),
	// sensitive (TPM2B_SENSITIVE_DATA: the data).
	const obfOff = 2 + 2 + 2 + 2
	sens := page[dupOffSensitive : dupOffSensitive+obfOff+sha256Size+2+len(data)]
	binary.BigEndian.PutUint16(sens[0:], uint16(len(sens)-2))
	binary.BigEndian.PutUint16(sens[2:], uint16(tpm2.TPMAlgKeyedHash))
	binary.BigEndian.PutUint16(sens[4:], 0)
	binary.BigEndian.PutUint16(sens[6:], sha256Size)
	// The obfuscation value hides the data from the unique field, which is
	// public; it is as secret as the data.
	obfuscation := sens[obfOff : obfOff+sha256Size]
	if _, err := rand.Read(obfuscation); err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(sens[obfOff+sha256Size:], uint16(len(data)))
	copy(sens[obfOff+sha256Size+2:], data)

	// unique = SHA-256(obfuscation || data).
	in := scratch[:sha256Size+len(data)]
	copy(in, obfuscation)
	copy(in[sha256Size:], data)
	unique := sha256.Sum256(in)
	clear(in)
	pub := duplicateTemplate(unique[:])
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, err
	}

	// The outer wrapper's seed, from an ephemeral key agreement.
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(srkPub)
	if err != nil {
		return nil, err
	}
	n := copy(page[dupOffZ:dupOffZ+sha256Size], z)
	secmem.Wipe(z)
	if n != sha256Size {
		return nil, fmt.Errorf("ecdh: %d-byte shared secret", n)
	}
	ephPoint, srkPoint := eph.PublicKey().Bytes(), srkPub.Bytes()
	if len(ephPoint) != 1+2*sha256Size || len(srkPoint) != 1+2*sha256Size {
		return nil, errors.New("ecdh: not an uncompressed P-256 point")
	}
	ephX, ephY, srkX := ephPoint[1:1+sha256Size], ephPoint[1+sha256Size:], srkPoint[1:1+sha256Size]
	seed := (*[sha256Size]byte)(page[dupOffSeed : dupOffSeed+sha256Size])
	if err := seccrypt.KDFe(seed, page[dupOffZ:dupOffZ+sha256Size], "DUPLICATE", ephX, srkX, scratch); err != nil {
		return nil, err
	}
	clear(page[dupOffZ : dupOffZ+sha256Size])
	aesKey := page[dupOffAESKey : dupOffAESKey+16]
	hmacKey := page[dupOffHMACKey : dupOffHMACKey+sha256Size]
	if err := seccrypt.KDFa(aesKey, seed[:], "STORAGE", name.Buffer, nil, scratch, inner); err != nil {
		return nil, err
	}
	if err := seccrypt.KDFa(hmacKey, seed[:], "INTEGRITY", nil, nil, scratch, inner); err != nil {
		return nil, err
	}
	clear(seed[:])

	// Encrypt the whole TPM2B_SENSITIVE, size included, in place; from
	// here on it holds nothing in clear.
	var iv [16]byte
	if err := seccrypt.CFB(sens, aesKey, iv[:], page[dupOffCFB:dupOffCFB+32], true); err != nil {
		return nil, err
	}
	var outerHMAC [sha256Size]byte
	if err := seccrypt.HMAC(outerHMAC[:], hmacKey, scratch, inner, sens, name.Buffer); err != nil {
		return nil, err
	}
	dup := make([]byte, 0, 2+sha256Size+len(sens))
	dup = binary.BigEndian.AppendUint16(dup, sha256Size)
	dup = append(dup, outerHMAC[:]...)
	dup = append(dup, sens...)
	encSeed := tpm2.Marshal(tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: ephX},
		Y: tpm2.TPM2BECCParameter{Buffer: ephY},
	})
	return &Duplicate{
		ParentName:    bytes.Clone(parentName),
		Public:        tpm2.Marshal(tpm2.New2B(pub)),
		Private:       tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: dup}),
		EncryptedSeed: tpm2.Marshal(tpm2.TPM2BEncryptedSecret{Buffer: encSeed}),
	}, nil
}

// Check checks the shape of d: a parent Name of the right form, a public
// area that is exactly a wrapped object as NewDuplicate makes it, and
// well-formed private and encrypted seed parts. Only the target TPM can
// check the rest. Errors wrap ErrMalformedBlob.
func (d *Duplicate) Check() error {
	_, err := d.parse()
	return err
}

// Parts returns what TPM2_Import takes, after the checks of Check.
func (d *Duplicate) Parts() (pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate, seed tpm2.TPM2BEncryptedSecret, err error) {
	p, err := d.parse()
	if err != nil {
		return pub, priv, seed, err
	}
	return p.pub, p.priv, p.seed, nil
}

type parsedDuplicate struct {
	pub  tpm2.TPM2BPublic
	priv tpm2.TPM2BPrivate
	seed tpm2.TPM2BEncryptedSecret
}

func (d *Duplicate) parse() (*parsedDuplicate, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: nil wrapped object", ErrMalformedBlob)
	}
	if len(d.ParentName) != srkNameSize || d.ParentName[0] != 0 || d.ParentName[1] != byte(tpm2.TPMAlgSHA256) {
		return nil, malformed("target srk name", "want %d bytes starting with the SHA-256 algorithm id", srkNameSize)
	}
	var p parsedDuplicate
	if len(d.Public) > maxTPM2B || len(d.Public) < 2 {
		return nil, malformed("wrapped public", "%d bytes, want 2 to %d", len(d.Public), maxTPM2B)
	}
	if !bytes.HasPrefix(d.Public[2:], sealedPublicHeader) {
		return nil, malformed("wrapped public", "not a SHA-256 keyedHash object")
	}
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](d.Public)
	if err != nil {
		return nil, malformed("wrapped public", "%v", err)
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, malformed("wrapped public", "%v", err)
	}
	unique, err := pub.Unique.KeyedHash()
	if err != nil || len(unique.Buffer) != sha256Size {
		return nil, malformed("wrapped public", "unique: want a %d-byte digest", sha256Size)
	}
	want := tpm2.Marshal(tpm2.New2B(duplicateTemplate(unique.Buffer)))
	if !bytes.Equal(want, d.Public) {
		return nil, malformed("wrapped public", "not a wrapped object as icn-agent makes it (attributes, policy or encoding differ)")
	}
	p.pub = *pub2b
	for _, part := range []struct {
		field string
		data  []byte
		into  func([]byte) error
	}{
		{"wrapped private", d.Private, func(b []byte) error {
			v, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](b)
			if err == nil {
				p.priv = *v
			}
			return err
		}},
		{"encrypted seed", d.EncryptedSeed, func(b []byte) error {
			v, err := tpm2.Unmarshal[tpm2.TPM2BEncryptedSecret](b)
			if err == nil {
				p.seed = *v
			}
			return err
		}},
	} {
		if len(part.data) < 3 || len(part.data) > maxTPM2B {
			return nil, malformed(part.field, "%d bytes, want 3 to %d", len(part.data), maxTPM2B)
		}
		if size := int(part.data[0])<<8 | int(part.data[1]); size != len(part.data)-2 {
			return nil, malformed(part.field, "size field says %d bytes, %d present", size, len(part.data)-2)
		}
		if err := part.into(part.data); err != nil {
			return nil, malformed(part.field, "%v", err)
		}
	}
	return &p, nil
}
