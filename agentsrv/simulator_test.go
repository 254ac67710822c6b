package agentsrv

// The tests that open tpmdev.KindSim run on the reference simulator.
import _ "github.com/icn/icn-agent/internal/tpmsim"
