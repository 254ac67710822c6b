package tpmseal

import (
	"context"
	"errors"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// CheckStatus says whether t should unseal b now: b's SRK, and its PCRs
// against the values recorded at seal time or, for signed policies,
// against the approved policies given. It neither unseals nor needs a
// PIN (see CheckPolicy).
func CheckStatus(ctx context.Context, t TPM, b *sealstore.Blob, policies []*sealstore.SignedPolicy) sealstore.BlobStatus {
	err := CheckPolicy(ctx, t, b, policies)
	var mm *PCRMismatchError
	var mp *sealstore.MissingPolicyError
	switch {
	case err == nil:
		return sealstore.BlobStatus{Status: sealstore.StatusUsable}
	case errors.Is(err, ErrSRKMismatch):
		return sealstore.BlobStatus{Status: sealstore.StatusOtherTPM, Err: err}
	case errors.As(err, &mm):
		return sealstore.BlobStatus{Status: sealstore.StatusPCRMismatch, MismatchedPCRs: mm.PCRs, Err: err}
	case errors.As(err, &mp):
		return sealstore.BlobStatus{Status: sealstore.StatusNoSignedPolicy, Err: err}
	}
	return sealstore.BlobStatus{Status: sealstore.StatusUnknown, Err: err}
}

// PCRReader is the TPM access ReadPCRValues needs: exclusive use of the
// transport for the duration of fn. *tpmdev.TPM implements it.
type PCRReader interface {
	Run(ctx context.Context, fn func(tpm transport.TPM) error) error
}

var _ PCRReader = (*tpmdev.TPM)(nil)

// ReadPCRValues reads the current SHA-256 values of pcrs from the TPM, in
// the order given (ascending, each once), to sign them (sealstore.SignPolicy) or
// compare them.
func ReadPCRValues(ctx context.Context, t PCRReader, pcrs []int) ([]sealstore.PCRValue, error) {
	var out []sealstore.PCRValue
	err := t.Run(ctx, func(tpm transport.TPM) error {
		values, _, err := tpmdev.ReadPCRs(tpm, tpm2.TPMAlgSHA256, pcrs)
		if err != nil {
			return err
		}
		for i, idx := range pcrs {
			out = append(out, sealstore.PCRValue{Index: idx, Value: values[i]})
		}
		return nil
	})
	return out, err
}
