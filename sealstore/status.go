package sealstore

import (
	"context"
	"errors"
)

// A blob's status on a TPM, as icn-agent list reports it (the strings are
// those of its JSON output, a contract with scripts).
const (
	// StatusUsable: the TPM should unseal the blob now (given its PIN, if
	// it has one).
	StatusUsable = "usable"
	// StatusPCRMismatch: PCRs the blob is bound to hold other values than
	// at seal time.
	StatusPCRMismatch = "pcr-mismatch"
	// StatusNoSignedPolicy: no signed policy at hand approves the current
	// PCR values of a PolicyAuthorizedPCR blob.
	StatusNoSignedPolicy = "no-signed-policy"
	// StatusOtherTPM: the blob was sealed by another TPM, or before this
	// one was cleared.
	StatusOtherTPM = "other-tpm"
	// StatusUnreadable: the blob file does not parse (not set by
	// CheckStatus, which needs a parsed blob).
	StatusUnreadable = "unreadable"
	// StatusUnknown: the check itself failed.
	StatusUnknown = "unknown"
)

// BlobStatus is whether a blob should unseal on a TPM now, and if not,
// why.
type BlobStatus struct {
	// Status is one of the Status constants.
	Status string
	// MismatchedPCRs lists, for StatusPCRMismatch, the PCRs that changed
	// since sealing.
	MismatchedPCRs []int
	// Err is CheckPolicy's error, nil when usable.
	Err error
}

// CheckStatus says whether t should unseal b now: b's SRK, and its PCRs
// against the values recorded at seal time or, for signed policies,
// against the approved policies given. It neither unseals nor needs a
// PIN (see CheckPolicy).
func CheckStatus(ctx context.Context, t TPM, b *Blob, policies []*SignedPolicy) BlobStatus {
	err := CheckPolicy(ctx, t, b, policies)
	var mm *PCRMismatchError
	var mp *MissingPolicyError
	switch {
	case err == nil:
		return BlobStatus{Status: StatusUsable}
	case errors.Is(err, ErrSRKMismatch):
		return BlobStatus{Status: StatusOtherTPM, Err: err}
	case errors.As(err, &mm):
		return BlobStatus{Status: StatusPCRMismatch, MismatchedPCRs: mm.PCRs, Err: err}
	case errors.As(err, &mp):
		return BlobStatus{Status: StatusNoSignedPolicy, Err: err}
	}
	return BlobStatus{Status: StatusUnknown, Err: err}
}
