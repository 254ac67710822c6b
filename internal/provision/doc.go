// Package provision holds the transactions that create an identity or
// change how it is sealed. Each writes nothing unless all of it succeeds:
// a caller sees either the new state or, with the error, the old one.
//
//   - [Create] seals a seed (a new one, or one imported from a key file)
//     as a new identity and, if asked, writes an encrypted backup of it
//     first. The backup is written before the identity is stored, so an
//     identity never exists without the backup that was asked for; if
//     storing the identity then fails, the backup is removed again, unless
//     the identity turns out to exist after all (a backup must not be the
//     only copy of a key nobody uses, nor be lost for one somebody does).
//   - [Unseal] unseals an identity into locked memory and checks the seed
//     against the identity's public key: a blob that unseals to another
//     key is damaged ([ErrSeedMismatch]), whatever the TPM says.
//     [UnsealOptions] gathers what it needs, asking for a PIN only once
//     the identity's policy is known to be satisfiable: a wrong guess
//     counts towards the TPM's lockout, a guess that cannot help must
//     not be asked for.
//   - [Reseal] seals an unsealed seed again, under another policy or PIN,
//     and replaces the identity's blob only after the new blob, read back
//     from the store, unseals to the same key (sealstore's ReplaceChecked
//     does the replacing, crash-safely). [Change] says what a reseal
//     changes; everything else about the identity is kept.
//
// Restoring a backup and importing a migration are recovery.Restore and
// recovery.ImportMigration; they too refuse to replace anything.
//
// Seeds live only in locked memory (internal/secmem) and are wiped when a
// function returns; PINs come from the caller, which reads and wipes them.
// Errors say what failed and whether anything was written, never what to
// type next: the command adds that.
package provision
