package daemon

// The tests that open tpmdev.KindSim run on the reference simulator. It is
// one instance per process: no test here uses t.Parallel.
import _ "github.com/icn/icn-agent/internal/tpmsim"
