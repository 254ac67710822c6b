// Package attesttpm is the TPM side of attestation: icn-agent's
// attestation key (an [AK], kept in a small file and loaded under the
// SRK), the quote that answers a verifier's challenge ([AK.Quote], which
// returns attest.Evidence), the endorsement key and credential activation
// ([AK.EKInfo], [AK.Activate]) and stamps of a log's head ([AK.Stamp]).
//
// Everything a verifier needs (the evidence types, their encodings,
// Verify, VerifyEK, VerifyStamp, the agent-protocol requests) is in the
// public package attest, which imports no TPM code; this package builds
// the evidence that attest checks, and checks each piece of evidence with
// attest.Verify before returning it. It is internal because it works on
// tpmdev's TPM and SRK.
package attesttpm
