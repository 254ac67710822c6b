// Command sign signs a message with an identity of the running icn-agent
// and verifies the signature with nothing but the public key, as a peer
// that knows only the identity's did:key or authorized_keys line would.
//
//	go run ./examples/sign NAME "message"
package main

import (
	"crypto/ed25519"
	"fmt"
	"log"
	"os"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv/client"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: sign NAME MESSAGE")
	}
	name, msg := os.Args[1], []byte(os.Args[2])
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
		if id.Name != name {
			continue
		}
		// The agent unseals the seed on first use and signs in software.
		sig, err := c.Sign(id.Key, msg)
		if err != nil {
			log.Fatal(err)
		}
		// Anyone can check it with the public key alone.
		pub := id.Key.(ssh.CryptoPublicKey).CryptoPublicKey().(ed25519.PublicKey)
		fmt.Printf("%s signed %q: %x\nverifies: %v\n", id.DIDKey, msg, sig.Blob, ed25519.Verify(pub, msg, sig.Blob))
		return
	}
	log.Fatalf("the agent serves no identity %q", name)
}
