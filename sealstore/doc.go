// Package sealstore defines icn-agent's sealed identities and stores them
// on disk.
//
// # Sealed identities
//
// An identity is an Ed25519 key pair used to answer ssh-agent requests. Its
// 32-byte private seed never touches the disk in the clear: it is the
// sensitive data of a TPM 2.0 sealed-data object (a keyedHash object with
// neither sign nor decrypt set) created under the TPM's storage root key
// (SRK). The object's authPolicy is one of these policies, so the TPM
// releases the seed (TPM2_Unseal) only in a policy session that satisfied
// it:
//
//   - [PolicyPCR]: TPM2_PolicyPCR over the selected PCRs' values recorded
//     when the identity was sealed. A firmware update that changes them
//     makes the identity unusable until it is resealed.
//   - [PolicyAuthorizedPCR]: TPM2_PolicyAuthorize naming a policy signing
//     key (an ECDSA P-256 key kept offline), as systemd-cryptenroll
//     --tpm2-public-key does. No value is fixed at seal time: the object
//     unseals under any PCR values for which a TPM2_PolicyPCR digest signed
//     by that key is presented ([SignedPolicy]). The session runs
//     TPM2_PolicyPCR with the current values, the TPM verifies the signed
//     policy with the key (TPM2_LoadExternal of its public area,
//     TPM2_VerifySignature, giving a ticket) and TPM2_PolicyAuthorize
//     replaces the session's digest by the key-bound one. New firmware's
//     values are signed before it is installed; old signatures keep
//     working.
//
// Either may also need a PIN: the policy then ends in
// TPM2_PolicyAuthValue, the object's authValue is tpmseal.PINAuthValue of
// the PIN, and its noDA attribute is clear, so that wrong PINs count
// towards the TPM's dictionary-attack lockout (TPM_RC_AUTH_FAIL is
// reported as tpmseal.ErrWrongPIN, TPM_RC_LOCKOUT as tpmseal.ErrLockout). For PolicyAuthorizedPCR
// the PolicyAuthValue comes after TPM2_PolicyAuthorize: the signer approves
// PCR values only, and the same signed policies serve identities with and
// without a PIN. Without a PIN the object has noDA set: there is no
// password to guess. The object's userWithAuth attribute is always clear,
// so no password alone can substitute for the policy.
//
// What the TPM returns from TPM2_Create — the object's TPM2B_PUBLIC and its
// TPM2B_PRIVATE (the seed, encrypted and integrity-protected with a key only
// the parent SRK can derive) — is not secret. Together with the Ed25519
// public key, the PCR policy and the name of the parent SRK it is written to
// a blob file. The blob alone is useless without the very TPM that created
// it, in the recorded PCR state.
//
// This package knows nothing about talking to a TPM: sealing, unsealing
// and the TPM side of migration are package tpmseal (sealstore/tpmseal),
// which reads and writes what this package defines. It provides:
//
//   - [Blob], with [Blob.Marshal] and [ParseBlob] implementing the file
//     format below, and checking every field, including that the sealed
//     object really is a PCR-bound sealed-data object (see below);
//   - [PolicyPCRDigest], [PolicyAuthorizeDigest] and [PolicyDigest],
//     computing in software the policy digests a TPM computes;
//   - [SignedPolicy], with [SignPolicy], [SignedPolicy.Marshal] and
//     [ParseSignedPolicy] implementing the signed policy file format below;
//   - [Duplicate], a seed wrapped in software for another TPM's storage
//     root key ([NewDuplicate], [SRKPublic]), for migration;
//   - [Store], a directory of blob files and signed policies, written
//     atomically, and its [Watcher].
//
// # Store layout
//
// A store is a directory, by default [DefaultDir], mode 0700, owned by the
// user. Identity NAME (see [ValidName]) is the file NAME.sealed, mode 0600,
// holding the blob. Next to it, NAME.pub holds the public key in
// authorized_keys format (see [Blob.AuthorizedKey]); it is derived data,
// rewritten whenever the blob is written and never read back. Files are
// written to a temporary file named ".*.tmp" in the same directory, synced,
// and renamed into place, so a reader sees either no file or a whole one.
//
// While [Store.ReplaceChecked] reseals identity NAME, NAME.sealed.bak is a
// hard link to the blob being replaced; it is removed once the new blob,
// checked by unsealing it, has replaced NAME.sealed (a blob bound to an
// old, perhaps weaker, policy must not linger). One left behind by a crash
// is the pre-reseal blob, and blocks further reseals until removed.
//
// The subdirectory "policies" (mode 0700) holds signed policies, one per
// file named DIGEST-KEYID.policy ([SignedPolicy.FileName]): the approved
// policy digest and the ID of the signing key, in hex. Files are written
// like blobs and never replaced. Store.List and the Watcher look only at
// NAME.sealed files, so neither NAME.sealed.bak nor the policies directory
// is ever taken for an identity.
//
// # Blob file format, version 1
//
// A blob file is a single PEM block (RFC 7468 textual encoding) of type
//
//	ICN AGENT SEALED IDENTITY
//
// without PEM headers. Only whitespace may precede or follow the block. The
// file is at most 64 KiB.
//
// The block's content is a binary structure. Integers are big-endian,
// unsigned unless noted. A "string" is a uint32 byte count followed by that
// many bytes, as in the SSH wire protocol (RFC 4251 section 5). Fields follow
// each other without padding (the framing internal/wire reads and writes),
// in this order:
//
//	string  magic
//	uint32  version
//	string  name
//	string  comment
//	string  ssh public key
//	byte    policy kind
//	uint16  pcr bank
//	uint32  pcr count
//	        pcr count times:
//	byte      pcr index
//	string    pcr value
//	string  policy digest
//	string  policy key          (only if the policy kind is 2 or 0x82)
//	string  srk name
//	string  tpm2b public
//	string  tpm2b private
//	int64   created
//
// Nothing may follow the last field. The fields are:
//
// magic: the 25 ASCII bytes "icn-agent-sealed-identity".
//
// version: the format version, 1 ([FormatVersion]). A reader rejects other
// versions with an error wrapping [ErrUnsupportedVersion] before looking at
// the rest, so later versions may change everything after this field.
//
// name: the identity name, 1 to 64 bytes satisfying [ValidName]. It equals
// the file name without ".sealed"; a mismatch makes [Store] reject the file.
//
// comment: free text, at most 1024 bytes of valid UTF-8 without control
// characters (no C0 or C1 control, no DEL, hence no line breaks). It may be
// empty. It is the comment shown by ssh-add -l.
//
// ssh public key: the Ed25519 public key in SSH wire encoding (RFC 8709):
// string "ssh-ed25519", then string holding the 32-byte key. No other key
// type and no trailing data is accepted. It must be the public key of the
// sealed seed; only the TPM can check that, by unsealing.
//
// policy kind: how the sealed object's authPolicy is built. Bits 0-6 are
// the kind: 1, a TPM2_PolicyPCR starting from the empty policy
// ([PolicyPCR]); 2, a TPM2_PolicyAuthorize starting from the empty policy,
// with keySign the Name of the policy key field and an empty policyRef
// ([PolicyAuthorizedPCR]). Bit 7 (0x80) is the PIN flag: the policy then
// continues with TPM2_PolicyAuthValue ([Policy].PIN). So the byte is 0x01,
// 0x02, 0x81 or 0x82; other values are rejected. Kind 2 and the PIN flag
// were added to version 1 without changing its layout for kind 1: a reader
// that predates them rejects such blobs as unsupported policy kinds
// rather than misreading them.
//
// pcr bank: the TPM_ALG_ID of the PCR bank the policy selects. Only
// TPM_ALG_SHA256 (0x000B) is accepted; SHA-1 (0x0004) is deliberately
// refused.
//
// pcr count: the number of PCRs in the policy, 1 to 24.
//
// pcr index, pcr value: one entry per selected PCR, with index 0 to 23,
// strictly increasing from entry to entry. For kind 1 the value is the
// PCR's content in the bank at seal time, exactly the bank's digest size
// (32 bytes for SHA-256). For kind 2 the value is empty (length 0): the
// entries only select the PCRs that TPM2_PolicyPCR covers at unseal time,
// whose values a signed policy must approve.
//
// policy digest: the sealed object's authPolicy, 32 bytes, as computed by
// [PolicyDigest]: for kind 1 the SHA-256 policy digest of TPM2_PolicyPCR
// over the listed PCRs ([PolicyPCRDigest]); for kind 2
//
//	SHA256(SHA256(0^32 || TPM_CC_PolicyAuthorize || key name) || "")
//
// ([PolicyAuthorizeDigest]); and with the PIN flag, that digest D extended
// as SHA256(D || TPM_CC_PolicyAuthValue). A reader recomputes it and
// rejects a mismatch.
//
// policy key (kind 2 only): the policy signing key's public area, a
// marshalled TPM2B_PUBLIC of exactly the form [PolicyKey] describes: an
// ECC NIST P-256 key, nameAlg SHA-256, attributes sign and userWithAuth
// only, scheme ECDSA with SHA-256, no symmetric algorithm or KDF, and the
// point as two 32-byte coordinates (90 bytes in all). Its Name, 0x000B
// followed by the SHA-256 of the TPMT_PUBLIC, is the keySign of the
// policy. A reader rebuilds the area from the point (which must be on the
// curve) and rejects any other encoding.
//
// srk name: the TPM Name of the parent storage key the object was created
// under (the contents of a TPM2B_NAME, without its size): the 2-byte
// TPM_ALG_SHA256 (0x000B) followed by the 32-byte SHA-256 digest of the
// parent's public area, 34 bytes in all. It identifies the parent so a
// loader can detect that it is about to load the object under the wrong key.
//
// tpm2b public: the sealed object's public area as a marshalled TPM2B_PUBLIC,
// that is a uint16 size followed by a TPMT_PUBLIC of exactly that size,
// nothing after it; at most 1024 bytes. The TPMT_PUBLIC must have type
// TPM_ALG_KEYEDHASH with the TPM_ALG_NULL scheme, nameAlg TPM_ALG_SHA256, a
// 32-byte unique digest, and the attributes fixedTPM, fixedParent and
// adminWithPolicy set, noDA set without the PIN flag and clear with it, and
// userWithAuth, sensitiveDataOrigin, sign and decrypt clear (other
// attributes are not constrained here; the TPM checks them on load). Its
// authPolicy must equal the policy digest field.
//
// tpm2b private: the sealed object's marshalled TPM2B_PRIVATE, a uint16 size
// followed by exactly that many bytes, at least 1 of them and at most 1024
// bytes for the whole field. Its content is opaque outside the TPM.
//
// created: the time the identity was sealed, as a signed count of seconds
// since the Unix epoch (UTC).
//
// Every length prefix is checked against the field's bound and against the
// bytes remaining before anything is allocated, so a corrupt length cannot
// make a reader allocate more than the file's size. Errors from [ParseBlob]
// wrap [ErrMalformedBlob] and name the offending field, for example
//
//	sealstore: malformed blob: pcr 7 value: want 32 bytes, got 5
//
// [Blob.Marshal] applies the same checks before writing, so a blob written by
// this package always parses.
//
// # Signed policy file format, version 1
//
// A signed policy approves PCR values for the identities sealed to one
// policy key (kind 2). Its file is a single PEM block of type
//
//	ICN AGENT SIGNED PCR POLICY
//
// without headers, only whitespace around it, at most 16 KiB. Its content
// uses the blob's encoding:
//
//	string  magic               "icn-agent-signed-pcr-policy"
//	uint32  version             1 (SignedPolicyVersion)
//	string  comment             what the values are, e.g. a firmware version
//	uint16  pcr bank            TPM_ALG_SHA256 only
//	uint32  pcr count           1 to 24
//	        pcr count times:
//	byte      pcr index         0 to 23, strictly increasing
//	string    pcr value         32 bytes
//	string  approved policy     32 bytes: PolicyPCRDigest of the values
//	string  policy key          65 bytes: the uncompressed P-256 point (0x04 || X || Y)
//	string  signature r         32 bytes, big-endian
//	string  signature s         32 bytes, big-endian
//	int64   signed              seconds since the Unix epoch
//
// The comment follows the blob comment's rules. The signature is ECDSA over
// aHash = SHA256(approved policy || policyRef) with an empty policyRef,
// the digest TPM2_PolicyAuthorize checks; this package signs
// deterministically (RFC 6979). [ParseSignedPolicy] checks every field,
// recomputes the approved policy from the values, and verifies the
// signature with the key; errors wrap [ErrMalformedPolicy], or
// [ErrUnsupportedPolicyVersion] for another version. The policy applies to
// the blobs whose policy key has the same Name, whose PCR selection is the
// policy's, when those PCRs hold the policy's values.
package sealstore
