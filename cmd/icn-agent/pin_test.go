package main

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// explainUnseal must keep the sentinels it adds advice to.
func TestExplainUnsealKeepsSentinels(t *testing.T) {
	b := &sealstore.Blob{Name: "x", Policy: sealstore.Policy{PCRs: []sealstore.PCRValue{{Index: 0}, {Index: 7}}}}
	for _, sentinel := range []error{tpmseal.ErrWrongPIN, tpmseal.ErrLockout, sealstore.ErrNoSignedPolicy, tpmseal.ErrPCRMismatch} {
		var in error
		switch sentinel {
		case sealstore.ErrNoSignedPolicy:
			in = &sealstore.MissingPolicyError{Name: "x", KeyID: "k"}
		case tpmseal.ErrPCRMismatch:
			in = &tpmseal.PCRMismatchError{Name: "x", PCRs: []int{7}}
		default:
			in = sentinel
		}
		if err := explainUnseal(context.Background(), failingTPM{}, nil, b, in); !errors.Is(err, sentinel) {
			t.Errorf("explainUnseal(%v) = %v: lost the sentinel", in, err)
		}
	}
}

// failingTPM is a tpmseal.TPM whose every use fails.
type failingTPM struct{}

func (failingTPM) RunWithSRK(context.Context, func(transport.TPM, *tpmdev.SRK) error) error {
	return errors.New("no TPM")
}
