// Package tpmsim links the reference TPM simulator (Microsoft's, through
// go-tpm-tools: C code and libcrypto, so cgo) into the program that imports
// it, and registers it with tpmdev as the TPM behind the "sim" spec
// (tpmdev.KindSim):
//
//	import _ "github.com/icn/icn-agent/internal/tpmsim"
//
// Only cmd/icn-agent and tests import it. Library packages never do, so
// they build with CGO_ENABLED=0 and carry no C code; an icn-agent built
// without cgo compiles this package empty, and --tpm sim then fails with
// tpmdev.ErrNoSimulator.
//
// The simulator's hierarchy seeds come from a fixed seed kept in the state
// directory (SeedFile, created from crypto/rand on first use), so what one
// process seals the next one unseals. Anyone who can read that file can
// unseal too: it is a development TPM, never a security boundary.
package tpmsim

// SeedFile is the name of the file, in the state directory, that holds the
// simulator's fixed seed: 16 hex digits and a newline.
const SeedFile = "sim-seed"
