package main

import (
	"fmt"
	"path/filepath"

	"github.com/icn/icn-agent/internal/cli"
)

// Host keys: a system instance of the agent (contrib/systemd/
// icn-agent-host.{socket,service}) serves sealed host keys to sshd through
// HostKeyAgent, from its own store and on its own socket.
const (
	// hostStore is the system instance's store.
	hostStore = "/var/lib/icn-agent/host"
	// hostSocket is the system instance's socket.
	hostSocket = "/run/icn-agent/host.sock"
)

// hostKeyDefaults makes keygen --host seal into the system instance's
// store unless --store says otherwise.
func hostKeyDefaults(f *sealFlags) {
	if f.store == "" {
		f.store = hostStore
	}
}

// printHostKeyConfig tells where sshd finds the host key NAME: its public
// key in the store (sshd never sees more), its signatures from the agent.
func printHostKeyConfig(e *cli.Env, f *sealFlags, name string) {
	pub, err := filepath.Abs(filepath.Join(f.store, name+".pub"))
	if err != nil {
		pub = filepath.Join(f.store, name+".pub")
	}
	fmt.Fprintf(e.Stderr, "icn-agent keygen: for sshd, add to sshd_config (and serve the store with icn-agent-host.socket):\n")
	fmt.Fprintf(e.Stderr, "HostKey %s\nHostKeyAgent %s\n", pub, hostSocket)
}
