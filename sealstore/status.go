package sealstore

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
