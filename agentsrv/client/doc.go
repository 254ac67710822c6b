// Package client is the Go client of icn-agent, for programs that use the
// agent's identities: list them with their backend and did:key, sign, have
// the agent unseal one now, read its status and counters, and reach the
// agent-protocol extensions (attestation requests go through
// [Client.Agent] and package attest).
//
// It depends on golang.org/x/crypto only: no TPM code, no cgo, nothing
// Linux-specific. It builds for every GOOS the agent protocol's unix
// socket exists on (linux, darwin, the BSDs, windows) with
// CGO_ENABLED=0, and talks to any ssh-agent: against one without the
// icn-agent extensions every key is a software key and Status and Add
// fail with errors that say so.
//
//	c, err := client.Dial("") // $SSH_AUTH_SOCK
//	if err != nil { ... }
//	defer c.Close()
//	ids, err := c.List()
//	for _, id := range ids {
//		fmt.Println(id.Backend, id.Name, id.DIDKey)
//	}
//
// # Wire formats
//
// The extension names and the status@icn-agent reply are defined here,
// and the agent (package agentsrv) encodes its status with
// [MarshalStatus], so client and server cannot drift apart. The byte
// layouts are documented in package agentsrv, section Extensions.
// [ParseStatus] reads versions 1 and 2 of the status reply, rejects
// trailing data and ignores fields a later version appends to an
// identity record.
package client
