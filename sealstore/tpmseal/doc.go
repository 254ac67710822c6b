// Package tpmseal seals identities' seeds in a TPM 2.0 and unseals them:
// the TPM side of the sealed identities whose format and store are
// package sealstore.
//
// [Seal] (or [Generate], for a new random seed) creates a sealed-data
// object holding the 32-byte Ed25519 seed under the TPM's storage root
// key, with the authPolicy of the blob's policy (sealstore.PolicyDigest):
// TPM2_PolicyPCR over the selected PCRs' current values, or
// TPM2_PolicyAuthorize naming a policy signing key, either optionally
// followed by TPM2_PolicyAuthValue with the PIN's [PINAuthValue]. It
// returns the *sealstore.Blob to store; nothing of it is secret.
//
// [Unseal] and [UnsealWith] ask the TPM for the seed in a policy session
// salted to the storage root key, with the response encrypted, so the
// seed crosses the bus encrypted and is decrypted only in the caller's
// locked buffer (the session is run by hand for that; see
// unseal_session.go). For a PolicyAuthorizedPCR blob the caller passes the
// signed policies (sealstore.SignedPolicy) that may approve the current
// PCR values; the one that does is verified by the TPM first. [CheckPolicy]
// answers, without unsealing and without a PIN, whether an unseal could
// succeed now: callers check before asking a person for a PIN.
//
// Errors say why the TPM refused, testable with errors.Is: the PCRs moved
// since sealing ([ErrPCRMismatch], a [*PCRMismatchError] naming them),
// another TPM or a cleared one ([ErrSRKMismatch]), a wrong PIN
// ([ErrWrongPIN]: the TPM counted the failure towards its
// dictionary-attack lockout) or that lockout ([ErrLockout]); no signed
// policy approving the values is sealstore.ErrNoSignedPolicy.
//
// [UnsealDuplicate] is the receiving end of a migration: it imports an
// object wrapped for this TPM's storage root key (sealstore.NewDuplicate,
// which needs only the key's public half, [ReadSRK]) and unseals it.
//
// Everything here goes through the [TPM] interface: exclusive use of a
// go-tpm transport with the storage root key loaded. icn-agent's own TPM
// owner implements it for /dev/tpmrm0, swtpm and the simulator alike;
// another program implements it over its own transport (package srk).
package tpmseal
