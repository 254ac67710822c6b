// Package attest lets icn-agent prove to a remote verifier that an SSH
// identity is a sealed identity of a TPM in a given platform state, and
// lets the verifier check that proof with no TPM.
//
// # Roles
//
// The agent (prover) owns an attestation key in its TPM and answers a
// verifier's challenge with a quote, which it returns as [Evidence]; that
// TPM side lives in icn-agent's internal/attesttpm, beside the rest of the
// TPM code. This package is what both sides share and all a verifier
// needs: pure Go, no TPM, no cgo, building on every platform. The
// verifier sends a fresh random nonce, receives the evidence (over the
// agent protocol as [Evidence.MarshalSSH], or as a JSON file), and calls
// [Verify] with the nonce and what it expects: a pinned attestation key,
// the identity, PCR values. The verification side (Verify, [ParseSSH],
// [Evidence.UnmarshalJSON]) is pure computation: no TPM, no sockets.
//
// # What evidence proves
//
// Evidence holds three signed statements, all bound to the verifier's nonce
// and to the identity key by [Binding]:
//
//  1. The quote. The attestation key, a restricted signing key, signed a
//     TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE over the SHA-256 values of the
//     sealing PCRs (and any extra PCRs the verifier asked for), with
//     extraData = Binding(nonce, identity key). A restricted key signs only
//     structures the TPM produced itself (they start with
//     TPM_GENERATED_VALUE, which the TPM refuses to sign for anyone else),
//     so the PCR values are the TPM's, now.
//
//  2. The certification of the sealed object. In the same boot, the same
//     attestation key signed the audit digest of a session in which the
//     TPM ran TPM2_ReadPublic on the loaded sealed object. That digest
//     covers the object's public area, its Name and its Qualified Name,
//     which proves the object was loaded as a child of the storage root key
//     (SRK) whose Name the evidence gives; the AK's own Qualified Name, in
//     both attestations, proves it is a child of the same SRK. The sealed
//     object's public area must say fixedTPM and fixedParent (its secret
//     can never be loaded outside this TPM) and not userWithAuth (no
//     password can stand in for its policy). Its authPolicy is compared
//     with the TPM2_PolicyPCR digest over the quoted values of its sealing
//     PCRs: [Result.SealedPolicyMatches] says whether the TPM would have
//     unsealed the identity at the time of the quote.
//
//  3. The proof of possession. The identity key signed
//     [PossessionMessage](nonce, quote) with Ed25519: whoever holds the
//     private key took part in this very exchange.
//
// # What evidence cannot prove
//
// The link between the identity key and the sealed object is asserted by
// the agent, not proven by the TPM: a TPM cannot compute Ed25519, and a
// sealed object's public area hides its data behind a secret obfuscation
// value. A verifier trusts that link as far as it trusts the software that
// ran the agent, which is what the quoted PCRs are for.
//
// The seed of an identity existed in software when it was generated or
// imported, before it was sealed (sensitiveDataOrigin is clear on sealed
// objects). Evidence cannot tell a seed that only ever lived in locked
// memory from one that was copied somewhere first.
//
// Evidence does not prove that the attestation key lives in a TPM at all.
// Its public area claims restricted, fixedTPM and so on, but a software key
// can wear the same public area and sign anything. Establishing that needs
// the TPM's endorsement key certificate and TPM2_MakeCredential /
// TPM2_ActivateCredential, which icn-agent does not do yet. Until then a
// verifier pins the attestation key when it enrolls a machine it trusts
// (trust on first use): by name ([VerifyOptions.TrustedAKName], the hex
// `icn-agent ak` prints) or by key ([VerifyOptions.TrustedAK], from
// the PEM `icn-agent ak` prints). Without a pin, [Result.AKPinned] is false and the
// evidence proves only its internal consistency. Clearing the TPM changes
// the SRK and so the attestation key: the verifier must enroll it again.
//
// Quoted PCR values mean nothing by themselves: a verifier needs known-good
// values (or an event log, which evidence does not carry) to judge them.
//
// # Why not TPM2_Certify
//
// The natural way to attest a loaded object is TPM2_Certify. Its object
// handle needs the ADMIN role, and icn-agent's sealed objects have
// adminWithPolicy set, so ADMIN actions need a policy session; the TPM then
// also requires the session's command code to have been set by
// TPM2_PolicyCommandCode (TPM 2.0 Part 1, "Authorization Roles";
// CheckPolicyAuthSession in the reference implementation), and adding it
// changes the policy digest. An
// object whose policy is a bare TPM2_PolicyPCR can therefore never be
// certified: both the reference simulator and swtpm answer
// TPM_RC_POLICY_FAIL, whether the PCRs match or not. Certify would work
// only for objects whose policy is, say, PolicyOR(PolicyPCR,
// PolicyCommandCode(TPM_CC_Certify)): a change to the sealed-object format.
//
// Instead Quote loads the sealed object (no authorization of the object is
// needed for that) and runs TPM2_ReadPublic on it in a fresh session with
// the audit attribute, then has the attestation key sign that session's
// audit digest with TPM2_GetSessionAuditDigest. Verify recomputes the
// digest (SHA-256 of 32 zero bytes, the command's cpHash and its rpHash)
// from the sealed public area and the SRK Name. This works whatever the
// PCRs hold, needs no authorization of the sealed object, and discloses
// nothing secret (not even the sealed object's encrypted private area).
// TPM2_GetSessionAuditDigest needs the authorization of the endorsement
// hierarchy (the privacy administrator); it is tried with the empty
// password, the default, which is not subject to dictionary-attack
// lockout. If the hierarchy has a password or is disabled, Quote returns
// evidence without certification, and Verify fails it with [ErrNoCertify]
// unless [VerifyOptions.AllowMissingCertify] is set.
//
// # Binding formulas
//
//	Binding(nonce, key) = SHA-256("icn-agent quote v1\x00" || u32(len(nonce)) || nonce || u32(len(keywire)) || keywire)
//	PossessionMessage(nonce, quoted) = "icn-agent possession v1\x00" || u32(len(nonce)) || nonce || u32(len(quoted)) || quoted
//
// where u32 is a big-endian uint32, keywire the SSH wire encoding of the
// identity key and quoted the TPMS_ATTEST bytes of the quote. The nonce is
// 8 to 64 bytes.
//
// # Interoperability
//
// [Evidence.WriteTPM2Tools] writes the quote in the files tpm2-tools'
// tpm2_checkquote reads, so the quote can be checked by an independent
// implementation (-q takes the hex of Binding, not of the nonce);
// [Evidence.ExportTPM2Tools] also writes the -q value and returns the
// tpm2_checkquote command.
//
// # Reports
//
// [Result.WriteText] and [AgentVerdict.WriteText] write what icn-agent
// verify and attest print; [VerdictJSON] is the JSON form of attest's
// verdict.
//
// # Encodings
//
// Evidence has two encodings of the same fields: the SSH wire encoding of
// the agent protocol extension ([Evidence.MarshalSSH] documents it) and
// JSON for files ([Evidence.MarshalJSON]). Both decoders check structure
// and bounds before allocating and never panic; only Verify checks what
// the evidence says.
package attest
