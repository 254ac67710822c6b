// Command attest plays both sides of an attestation: it challenges the
// running icn-agent with a fresh nonce for one identity, then verifies the
// evidence offline, as a remote verifier would with only the attest
// package, the nonce it sent and (ideally) the AK it pinned.
//
//	go run ./examples/attest NAME [AK.pem]
package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log"
	"os"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/attest"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: attest NAME [AK.pem]")
	}
	c, err := client.Dial("")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ids, err := c.List()
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range ids {
		if id.Name != os.Args[1] {
			continue
		}
		// The verifier's side: a fresh nonce for every request.
		nonce := make([]byte, 32)
		if _, err := rand.Read(nonce); err != nil {
			log.Fatal(err)
		}
		ev, err := attest.RequestEvidence(c.Agent(), id.Key, nonce, nil)
		if err != nil {
			log.Fatal(err)
		}
		opts := attest.VerifyOptions{Nonce: nonce, IdentityKey: id.Key}
		if len(os.Args) > 2 {
			opts.TrustedAK = readAK(os.Args[2]) // from `icn-agent ak`
		}
		res, err := attest.Verify(ev, opts)
		if err != nil {
			log.Fatalf("evidence rejected: %v", err)
		}
		fmt.Printf("identity %s: PCRs %v, AK pinned %v, sealed key still unseals %v\n",
			id.DIDKey, res.SealedPCRs, res.AKPinned, res.SealedPolicyMatches)
		return
	}
	log.Fatalf("the agent serves no identity %q", os.Args[1])
}

func readAK(path string) any {
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			log.Fatalf("%s holds no PEM public key", path)
		}
		if b.Type == "PUBLIC KEY" {
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				log.Fatal(err)
			}
			return k
		}
	}
}
