// Package recovery keeps icn-agent identities from being lost: encrypted
// backups that can be restored onto any TPM, and TPM-to-TPM migration that
// never puts a seed on disk in clear.
//
// A sealed blob (see package sealstore) is deliberately useless anywhere but
// on the TPM that sealed it, in the boot state it was sealed in. That is
// what makes it safe, and also what makes it fragile: a replaced
// motherboard, a cleared TPM, a firmware update that moves PCR 0 or a
// corrupted file would lose the identity for good. This package provides
// the two ways back:
//
//   - a backup: the seed, encrypted with age (https://age-encryption.org) to
//     recipients the user chooses (an age X25519 key, an SSH public key) or
//     to a passphrase, written once and never overwritten. Restoring it
//     needs the matching age identity, SSH private key or passphrase, and
//     any TPM.
//   - a migration: the seed wrapped by the source machine for exactly one
//     target TPM, whose storage root key public the user exported there
//     beforehand. Only that TPM can unwrap it; no passphrase is involved.
//
// Either way the seed exists in clear only in locked memory ([secmem]) of
// the process doing the work, and is sealed again (tpmseal.Seal) the
// moment it arrives.
//
// # Backup files
//
// A backup file is an age file (age-encryption.org/v1), ASCII-armored:
//
//	-----BEGIN AGE ENCRYPTED FILE-----
//	YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBy...
//	-----END AGE ENCRYPTED FILE-----
//
// so the age command can decrypt it too, and it survives being pasted into
// a password manager or printed. It is encrypted either to one or more
// public-key recipients (X25519 "age1...", post-quantum hybrid
// "age1pq1...", "ssh-ed25519 ..." or "ssh-rsa ..." lines) or to one
// passphrase (age's scrypt recipient, which age never mixes with others).
// [ParseRecipients] reads recipients; [Keys] says how to decrypt.
//
// The plaintext is a small binary structure in the style of the sealed
// blob format: integers big-endian, a "string" a uint32 byte count and that
// many bytes (RFC 4251 section 5; internal/wire reads and writes it), fields
// in this order and nothing after the last:
//
//	string  magic           "icn-agent-backup" (16 ASCII bytes)
//	uint32  version         1 (BackupVersion)
//	string  name            the identity name when backed up (sealstore.ValidName)
//	string  comment         at most 1024 bytes of UTF-8, no control characters
//	string  ssh public key  the Ed25519 public key, SSH wire encoding (RFC 8709)
//	string  seed            the 32-byte Ed25519 seed
//	int64   created         when the backup was made, seconds since the Unix epoch
//
// A reader rejects another version before reading further, so later versions
// may change everything after the version field. It checks that the public
// key is the seed's: a backup whose fields disagree is refused rather than
// restored as something else. The plaintext is at most [maxBackupPlaintext]
// bytes.
//
// # SRK files
//
// Migration starts on the target: "icn-agent srk" writes the public area of
// its storage root key (SRK), the TCG ECC P-256 key every icn-agent blob is
// sealed under, as a PEM block whose one header is the SRK's TPM Name in
// hex:
//
//	-----BEGIN ICN AGENT SRK-----
//	Name: 000b74818ff38824156123c317a58064091916741214264ced34aa83ba2d5ec85a20
//
//	AFoAIwALAAMEcgAAAAYAgABDABAAAwAQACD5nYC9rsRwP9ToqPaqwx8kg8Eg7Fmq
//	...
//	-----END ICN AGENT SRK-----
//
// The content is the marshalled TPM2B_PUBLIC, the same bytes tpm2_readpublic
// -o writes. A reader recomputes the Name from it and refuses a mismatch,
// and accepts only the TCG ECC P-256 storage key template
// (sealstore.NewSRKPublic). The file is public, but not authenticated: the
// Name is what the user compares, on both machines, to be sure the seed is
// wrapped for the right TPM.
//
// # Migration files
//
// "icn-agent migrate" unseals the identity on the source TPM and writes a
// migration file: a PEM block of type "ICN AGENT MIGRATION", no headers,
// whose content is, in the encoding above:
//
//	string  magic           "icn-agent-migration" (19 ASCII bytes)
//	uint32  version         1 (MigrationVersion)
//	string  name            the identity name on the source
//	string  comment         as in a backup
//	string  ssh public key  as in a backup
//	string  pcrs            the PCRs (SHA-256 bank) to seal to on the target:
//	                        one byte per PCR index, 1 to 24 of them, ascending
//	string  source srk name the source TPM's SRK Name (34 bytes), for the record
//	string  target srk name the target TPM's SRK Name (34 bytes)
//	int64   created         seconds since the Unix epoch
//	string  tpm2b public    \
//	string  tpm2b private    > the wrapped object (sealstore.Duplicate)
//	string  tpm2b seed      /
//
// The fields from magic through created are the header. The wrapped object
// is a TPM 2.0 duplication blob for the target SRK (see sealstore's
// migrate.go for its construction): a sealed-data object usable only by
// TPM2_Unseal, protected by an outer wrapper keyed by an ephemeral ECDH
// exchange with the target SRK. It holds 64 bytes: the seed, then the
// SHA-256 digest of the header bytes.
//
// Security argument, in short:
//
//   - Confidentiality: the wrapper's keys derive from a secret only the
//     holder of the target SRK's private key can compute, and that key never
//     leaves the target TPM. A copy of the file on any other machine, or on
//     the source, is ciphertext.
//   - Only that TPM: another TPM derives other keys and TPM2_Import fails its
//     integrity check (TPM_RC_INTEGRITY); nothing is imported.
//   - No tampering: the wrapper's HMAC covers the encrypted data and the
//     object's public area. The header is bound by its digest inside the
//     wrapped data, so changing the PCR list, the comment or the public key
//     in the file is detected after unwrapping, before anything is sealed.
//   - What it does not prove: the origin. Anyone can wrap a seed for a
//     public SRK, so a file could be replaced wholesale by an attacker's.
//     The target prints the identity's fingerprint, which the user compares
//     with what the source printed, exactly as for any new SSH key.
//   - Until it is imported, the file is as sensitive as a sealed blob
//     without its PCR policy: a process with access to the target TPM can
//     unwrap it. Delete it once the identity works on the target.
//
// The target unwraps (import, load, unseal in a policy session salted to
// its SRK, flush), checks the header digest and the public key, and seals
// the seed again with tpmseal.Seal as an ordinary fixedTPM blob bound to
// its own current PCR values. The imported object is never stored.
//
// # Existing keys
//
// An identity may start as a key that already exists: [ReadEd25519Seed]
// reads an OpenSSH or PKCS#8 Ed25519 private key, in the clear,
// passphrase-protected or age-encrypted (as the software keystore before
// icn-agent kept them), and returns only its seed, in locked memory; it
// asks for a passphrase or decryption keys only when the file turns out
// to need them. An age file that holds a backup rather than a key is
// refused ([ErrBackupNotKey]): it is restored, not imported.
// [PublicKeyComment] takes the comment from the KEY.pub beside the key,
// if that file holds the same key. [ReadIdentityFiles] reads the age
// identities and SSH private keys that decrypt backups, in locked memory
// too, and [ParseRecipientArgs] the recipients a backup is encrypted to.
//
// # Writing files
//
// [WriteNewFile] writes every backup and migration file: to a temporary
// file (mode 0600) in the same directory, synced, then hard-linked to its
// name, which fails if the name exists. A backup is therefore never
// overwritten, and never seen half-written.
package recovery
