// Command identities lists the keys a running icn-agent serves, with their
// did:key and whether a TPM holds them: the first thing an ICN tool asks an
// agent.
//
//	go run ./examples/identities
package main

import (
	"fmt"
	"log"

	"github.com/icn/icn-agent/agentsrv/client"
)

func main() {
	c, err := client.Dial("") // $SSH_AUTH_SOCK
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ids, err := c.List()
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range ids {
		fmt.Printf("%-12s %-8s hardware=%-5v %s\n", id.Name, id.Backend, id.HardwareBacked, id.DIDKey)
	}
}
