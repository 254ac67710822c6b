package attesttpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/icn/icn-agent/attest"
)

func TestStamp(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind)
			ak := f.ak("")
			d := sha256.Sum256([]byte("log head"))
			s, err := ak.Stamp(context.Background(), f.tpm, d[:])
			if err != nil {
				t.Fatal(err)
			}
			info, err := attest.VerifyStamp(s, d[:], ak.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(info.AKName, ak.Name()) {
				t.Error("wrong AK name")
			}
			s2, err := ak.Stamp(context.Background(), f.tpm, d[:])
			if err != nil {
				t.Fatal(err)
			}
			info2, _ := attest.VerifyStamp(s2, d[:], nil)
			if info2 == nil || info2.Clock < info.Clock {
				t.Errorf("the TPM clock went back: %+v then %+v", info, info2)
			}
			other := sha256.Sum256([]byte("another head"))
			if _, err := attest.VerifyStamp(s, other[:], nil); !errors.Is(err, attest.ErrBadStamp) {
				t.Errorf("stamp of another digest: %v", err)
			}
			if _, err := attest.VerifyStamp(s, d[:], make([]byte, 34)); !errors.Is(err, attest.ErrUntrustedAK) {
				t.Errorf("stamp with another pinned AK: %v", err)
			}
			bad := *s
			bad.Attest = bytes.Clone(s.Attest)
			bad.Attest[len(bad.Attest)-1] ^= 1
			if _, err := attest.VerifyStamp(&bad, d[:], nil); !errors.Is(err, attest.ErrBadStamp) {
				t.Errorf("tampered stamp: %v", err)
			}
		})
	}
}
