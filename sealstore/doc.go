// Package sealstore defines icn-agent's sealed identities and stores them
// on disk.
//
// # Sealed identities
//
// An identity is an Ed25519 key pair used to answer ssh-agent requests. Its
// 32-byte private seed never touches the disk in the clear: it is the
// sensitive data of a TPM 2.0 sealed-data object (a keyedHash object with
// neither sign nor decrypt set) created under the TPM's storage root key
// (SRK). The object's authPolicy is a TPM2_PolicyPCR digest, so the TPM
// releases the seed (TPM2_Unseal) only in a policy session whose PCR values
// equal the ones recorded when the identity was sealed. The object's
// userWithAuth attribute is clear, so no password can substitute for the
// policy.
//
// What the TPM returns from TPM2_Create — the object's TPM2B_PUBLIC and its
// TPM2B_PRIVATE (the seed, encrypted and integrity-protected with a key only
// the parent SRK can derive) — is not secret. Together with the Ed25519
// public key, the PCR policy and the name of the parent SRK it is written to
// a blob file. The blob alone is useless without the very TPM that created
// it, in the recorded PCR state.
//
// This package knows nothing about talking to a TPM. It provides:
//
//   - [Blob], with [Blob.Marshal] and [ParseBlob] implementing the file
//     format below, and checking every field, including that the sealed
//     object really is a PCR-bound sealed-data object (see below);
//   - [PolicyPCRDigest] and [PCRSelection], computing in software the policy
//     digest a TPM computes for TPM2_PolicyPCR;
//   - [Store], a directory of blob files, written atomically.
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
// each other without padding, in this order:
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
// policy kind: how the sealed object's authPolicy is built. 1 means a single
// TPM2_PolicyPCR starting from the empty policy ([PolicyPCR]); it is the
// only kind in version 1. Other values are reserved (for example for a
// TPM2_PolicyAuthorize-based policy) and rejected.
//
// pcr bank: the TPM_ALG_ID of the PCR bank the policy selects. Only
// TPM_ALG_SHA256 (0x000B) is accepted; SHA-1 (0x0004) is deliberately
// refused.
//
// pcr count: the number of PCRs in the policy, 1 to 24.
//
// pcr index, pcr value: one entry per selected PCR, with index 0 to 23,
// strictly increasing from entry to entry. The value is the PCR's content in
// the bank at seal time, exactly the bank's digest size (32 bytes for
// SHA-256).
//
// policy digest: the sealed object's authPolicy, 32 bytes: the SHA-256
// policy digest of TPM2_PolicyPCR over the listed PCRs, as computed by
// [PolicyPCRDigest] from the bank and the listed values. A reader recomputes
// it and rejects a mismatch.
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
// 32-byte unique digest, and the attributes fixedTPM, fixedParent, noDA and
// adminWithPolicy set and userWithAuth, sensitiveDataOrigin, sign and
// decrypt clear (other attributes are not constrained here; the TPM checks
// them on load). Its authPolicy must equal the policy digest field.
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
package sealstore
