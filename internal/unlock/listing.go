package unlock

import (
	"context"
	"log/slog"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// Listings describes the identities in store (sealstore.Describe), each
// with whether the TPM should unseal it now (tpmseal.CheckStatus, with
// the store's signed policies): what icn-agent list shows. open is called
// for the TPM only if the store holds an identity; if it fails, the
// status of every readable identity is StatusUnknown with its error. An
// error is returned only if the store cannot be listed.
func Listings(ctx context.Context, store *sealstore.Store, open func(context.Context) (*tpmdev.TPM, error), log *slog.Logger) ([]sealstore.Listing, error) {
	entries, err := store.List()
	if err != nil {
		return nil, err
	}
	out := make([]sealstore.Listing, 0, len(entries))
	var tpm *tpmdev.TPM
	var tpmErr error
	if len(entries) > 0 {
		if tpm, tpmErr = open(ctx); tpmErr == nil {
			defer tpm.Close()
		}
	}
	for _, en := range entries {
		l := sealstore.Describe(en)
		switch {
		case en.Err != nil:
		case tpmErr != nil:
			l.Status, l.Error = sealstore.StatusUnknown, tpmErr.Error()
		default:
			l.SetStatus(tpmseal.CheckStatus(ctx, tpm, en.Blob, SignedPolicies(store, en.Blob, log)))
		}
		out = append(out, l)
	}
	return out, nil
}
