package agentsrv

import "github.com/icn/icn-agent/agentsrv/client"

// Client is the agent client, which lives in package agentsrv/client.
//
// Deprecated: use client.Client. This alias keeps code written before the
// move compiling; it will be removed.
type Client = client.Client

// Dial connects to an agent.
//
// Deprecated: use client.Dial.
func Dial(path string) (*client.Client, error) { return client.Dial(path) }
