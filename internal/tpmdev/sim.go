package tpmdev

import (
	"errors"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"
)

// Simulator is an in-process TPM: a transport that can also be
// power-cycled. internal/tpmsim provides the reference simulator.
type Simulator interface {
	transport.TPMCloser
	// Reboot powers the TPM off and on again: PCRs return to their
	// initial values and loaded objects are gone; the hierarchy seeds,
	// so every sealed blob, survive.
	Reboot() error
	// SeedPath names the file whose contents let anyone unseal what the
	// simulator sealed (for the warning Open logs).
	SeedPath() string
}

// ErrNoSimulator is returned by Open for KindSim when no simulator is
// linked in: the program does not import internal/tpmsim, or was built
// with CGO_ENABLED=0.
var ErrNoSimulator = errors.New("tpmdev: this icn-agent was built without the simulator (CGO_ENABLED=0)")

var (
	simMu   sync.Mutex
	openSim func(stateDir string) (Simulator, error)
)

// RegisterSimulator makes open the way KindSim is opened: it starts a
// simulator whose seed lives in stateDir. internal/tpmsim calls it from
// its init; libraries never do, so that they stay free of cgo.
func RegisterSimulator(open func(stateDir string) (Simulator, error)) {
	simMu.Lock()
	defer simMu.Unlock()
	openSim = open
}

func simOpener() func(stateDir string) (Simulator, error) {
	simMu.Lock()
	defer simMu.Unlock()
	return openSim
}

// SimulatorLinked reports whether a simulator is registered, so that a
// program can refuse "sim" as soon as it reads it.
func SimulatorLinked() bool { return simOpener() != nil }
