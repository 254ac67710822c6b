package sealstore_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"testing/cryptotest"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/sealstore"
)

// NewDuplicate wraps by hand, in locked memory, exactly what go-tpm's
// tpm2.CreateDuplicate makes of the same sensitive area with the same
// randomness: the obfuscation value and the ephemeral key are drawn from
// the same deterministic stream for both, and the three parts must be
// byte for byte the same.
func TestNewDuplicateMatchesCreateDuplicate(t *testing.T) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point := priv.PublicKey().Bytes()
	pub := tpm2.ECCSRKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: point[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: point[33:]},
	})
	srk, err := sealstore.NewSRKPublic(pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 15, 16, 17, sealstore.SeedSize, sealstore.MaxDuplicateData} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		for i := range data {
			data[i] ^= byte(i)
		}
		cryptotest.SetGlobalRandom(t, uint64(n))
		got, err := sealstore.NewDuplicate(srk, data)
		if err != nil {
			t.Fatal(err)
		}

		cryptotest.SetGlobalRandom(t, uint64(n))
		obfuscation := make([]byte, sha256.Size)
		if _, err := rand.Read(obfuscation); err != nil {
			t.Fatal(err)
		}
		pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](got.Public)
		if err != nil {
			t.Fatal(err)
		}
		objPub, err := pub2b.Contents()
		if err != nil {
			t.Fatal(err)
		}
		unique, err := objPub.Unique.KeyedHash()
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(append(bytes.Clone(obfuscation), data...)); !bytes.Equal(unique.Buffer, want[:]) {
			t.Fatalf("%d bytes: unique %x, want SHA-256(obfuscation || data) %x", n, unique.Buffer, want)
		}
		name, err := tpm2.ObjectName(objPub)
		if err != nil {
			t.Fatal(err)
		}
		sensitive := tpm2.Marshal(tpm2.TPMTSensitive{
			SensitiveType: tpm2.TPMAlgKeyedHash,
			SeedValue:     tpm2.TPM2BDigest{Buffer: obfuscation},
			Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: data}),
		})
		key, err := tpm2.ImportEncapsulationKey(&srk.Public)
		if err != nil {
			t.Fatal(err)
		}
		dup, seed, err := tpm2.CreateDuplicate(rand.Reader, key, name.Buffer, sensitive)
		if err != nil {
			t.Fatal(err)
		}
		if want := tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: dup}); !bytes.Equal(got.Private, want) {
			t.Errorf("%d bytes: private part\n got %x\nwant %x", n, got.Private, want)
		}
		if want := tpm2.Marshal(tpm2.TPM2BEncryptedSecret{Buffer: seed}); !bytes.Equal(got.EncryptedSeed, want) {
			t.Errorf("%d bytes: encrypted seed\n got %x\nwant %x", n, got.EncryptedSeed, want)
		}
		if !bytes.Equal(got.ParentName, srk.Name) {
			t.Errorf("%d bytes: parent name %x, want %x", n, got.ParentName, srk.Name)
		}
	}
}
