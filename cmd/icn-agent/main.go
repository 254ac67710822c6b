// Command icn-agent is an ssh-agent whose Ed25519 identities are sealed in a
// TPM 2.0. Run "icn-agent help" for the subcommands.
package main

import (
	"flag"
	"os"

	"github.com/icn/icn-agent/internal/cli"
	// The reference simulator behind --tpm sim (cgo builds only).
	_ "github.com/icn/icn-agent/internal/tpmsim"
)

// commands are icn-agent's subcommands; each file registers its own.
var commands = &cli.Set{
	Prog:  "icn-agent",
	About: "an ssh-agent for Ed25519 identities sealed in a TPM 2.0",
	Hints: libraryHints,
}

func main() {
	os.Exit(commands.Run(os.Args[1:], &cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}))
}

// commonCommand returns command name, its flag set and the common flags
// registered in it.
func commonCommand(name string) (*cli.Command, *flag.FlagSet, *common) {
	c := commands.Lookup(name)
	fs := cli.FlagSet(c)
	f := new(common)
	f.register(fs)
	return c, fs, f
}
