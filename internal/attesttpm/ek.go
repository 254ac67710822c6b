package attesttpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/tpmdev"
)

// The endorsement keys icn-agent uses, as the TCG EK Credential Profile
// places them: the certificate's NV index, the persistent handle where
// platforms commonly keep the key, and the template that recreates it from
// the endorsement seed. High-range templates (ECC P-384 at 0x01c00016 and
// others) need other policies and are not used.
var ekKinds = []struct {
	name       string
	certIndex  tpm2.TPMHandle
	persistent tpm2.TPMHandle
	template   tpm2.TPMTPublic
}{
	{"RSA-2048", 0x01c00002, 0x81010001, tpm2.RSAEKTemplate},
	{"ECC NIST P-256", 0x01c0000a, 0x81010002, tpm2.ECCEKTemplate},
}

// maxEKCert bounds an EK certificate read from NV.
const maxEKCert = 4096

// nvChunk is how much of an NV index one TPM2_NV_Read reads: within
// MAX_NV_BUFFER_SIZE on every TPM.
const nvChunk = 512

// attest.EKInfo reads the TPM's EK certificate (RSA-2048 first, then ECC NIST
// P-256) and the EK it certifies, for a verifier (VerifyEK), with this
// attestation key's public area. A TPM with no EK certificate gives
// attest.EKInfo with Certificate empty and EKPublic that of the RSA EK, so that
// the verifier can say so.
func (a *AK) EKInfo(ctx context.Context, t TPM) (*attest.EKInfo, error) {
	info := &attest.EKInfo{AKPublic: bytes.Clone(a.public)}
	err := t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		for _, k := range ekKinds {
			cert, err := readEKCert(tpm, k.certIndex)
			if err != nil {
				return err
			}
			if cert == nil {
				continue
			}
			h, flush, err := ekHandle(tpm, k.persistent, k.template, cert)
			if err != nil {
				return fmt.Errorf("%s endorsement key: %w", k.name, err)
			}
			defer flush()
			rp, err := tpm2.ReadPublic{ObjectHandle: h.Handle}.Execute(tpm)
			if err != nil {
				return fmt.Errorf("read %s endorsement key: %w", k.name, err)
			}
			info.Certificate, info.EKPublic = cert, tpm2.Marshal(rp.OutPublic)
			return nil
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("attesttpm: endorsement key: %w", err)
	}
	return info, nil
}

// Activate opens a credential a verifier made for this attestation key
// under the TPM's certified EK (TPM2_ActivateCredential), and returns its
// secret. The TPM refuses unless the AK is loaded in the TPM that holds the
// EK, and its Name is the one the credential was made for.
func (a *AK) Activate(ctx context.Context, t TPM, blob, secret []byte) ([]byte, error) {
	var out []byte
	err := t.RunWithSRK(ctx, func(tpm transport.TPM, srk *tpmdev.SRK) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, k := range ekKinds {
			cert, err := readEKCert(tpm, k.certIndex)
			if err != nil {
				return err
			}
			if cert == nil {
				continue
			}
			ak, err := a.loadedLocked(tpm, srk)
			if err != nil {
				return err
			}
			ek, flush, err := ekHandle(tpm, k.persistent, k.template, cert)
			if err != nil {
				return fmt.Errorf("%s endorsement key: %w", k.name, err)
			}
			defer flush()
			ek.Auth = tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy)
			rsp, err := tpm2.ActivateCredential{
				ActivateHandle: ak,
				KeyHandle:      ek,
				CredentialBlob: tpm2.TPM2BIDObject{Buffer: blob},
				Secret:         tpm2.TPM2BEncryptedSecret{Buffer: secret},
			}.Execute(tpm)
			if err != nil {
				return fmt.Errorf("%w: %w", attest.ErrActivationFailed, err)
			}
			out = rsp.CertInfo.Buffer
			return nil
		}
		return attest.ErrNoEKCertificate
	})
	if err != nil {
		return nil, fmt.Errorf("attesttpm: activate credential: %w", err)
	}
	return out, nil
}

// ekPolicy satisfies the EK templates' policy: PolicySecret with the
// endorsement hierarchy (whose authorization is empty on a machine whose
// owner has not set one).
func ekPolicy(tpm transport.TPM, h tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{
		AuthHandle:    tpm2.TPMRHEndorsement,
		PolicySession: h,
		NonceTPM:      nonceTPM,
	}.Execute(tpm)
	if err != nil {
		tpm2.FlushContext{FlushHandle: h}.Execute(tpm)
	}
	return err
}

// readEKCert reads the certificate in NV index idx, or nil if there is
// none. Trailing padding after the DER structure is dropped.
func readEKCert(tpm transport.TPM, idx tpm2.TPMHandle) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCValue) {
			return nil, nil
		}
		return nil, fmt.Errorf("read ek certificate index 0x%08x: %w", uint32(idx), err)
	}
	nv, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	size := int(nv.DataSize)
	if size == 0 || size > maxEKCert {
		return nil, fmt.Errorf("ek certificate index 0x%08x holds %d bytes", uint32(idx), size)
	}
	h := tpm2.AuthHandle{Handle: idx, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)}
	var data []byte
	for len(data) < size {
		n := min(nvChunk, size-len(data))
		rsp, err := tpm2.NVRead{AuthHandle: h, NVIndex: tpm2.NamedHandle{Handle: idx, Name: pub.NVName}, Size: uint16(n), Offset: uint16(len(data))}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("read ek certificate index 0x%08x: %w", uint32(idx), err)
		}
		data = append(data, rsp.Data.Buffer...)
	}
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(data, &raw)
	if err != nil {
		return nil, fmt.Errorf("ek certificate index 0x%08x: not DER: %v", uint32(idx), err)
	}
	return data[:len(data)-len(rest)], nil
}

// ekHandle returns a handle of the EK that cert certifies: the persistent
// key if it is that one, else a primary created from template (flush
// releases it). Creating an RSA primary takes seconds on some chips, which
// is why the persistent key is tried first.
func ekHandle(tpm transport.TPM, persistent tpm2.TPMHandle, template tpm2.TPMTPublic, cert []byte) (tpm2.AuthHandle, func(), error) {
	want, err := certKey(cert)
	if err != nil {
		return tpm2.AuthHandle{}, nil, err
	}
	if rp, err := (tpm2.ReadPublic{ObjectHandle: persistent}).Execute(tpm); err == nil {
		if pub, err := rp.OutPublic.Contents(); err == nil {
			if k, err := attest.TPMPublicKey(pub); err == nil && want.Equal(k) {
				return tpm2.AuthHandle{Handle: persistent, Name: rp.Name}, func() {}, nil
			}
		}
	}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(template)}.Execute(tpm)
	if err != nil {
		return tpm2.AuthHandle{}, nil, fmt.Errorf("create from template: %w", err)
	}
	flush := func() { tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm) }
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush()
		return tpm2.AuthHandle{}, nil, err
	}
	if k, err := attest.TPMPublicKey(pub); err != nil || !want.Equal(k) {
		flush()
		return tpm2.AuthHandle{}, nil, errors.New("neither the persistent key nor the template's is the certified key")
	}
	return tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, flush, nil
}

// certKey returns the public key of a DER certificate.
func certKey(der []byte) (interface{ Equal(crypto.PublicKey) bool }, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, errors.New("ek certificate key of an unknown type")
	}
	return k, nil
}
