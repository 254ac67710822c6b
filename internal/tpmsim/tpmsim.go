//go:build cgo

package tpmsim

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpmutil"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/tpmdev"
)

func init() { tpmdev.RegisterSimulator(open) }

// maxSimSeedFile bounds what is read of the seed file.
const maxSimSeedFile = 4096

// simTransport is the in-process reference simulator. Its hierarchy seeds
// come from a seed kept on disk, so what one process seals the next can
// unseal. Anyone who can read that file can unseal too: it is a development
// TPM, never a security boundary.
type simTransport struct {
	sim  *simulator.Simulator
	seed int64
	path string // the seed file
}

// open starts the simulator with the seed kept in stateDir.
func open(stateDir string) (tpmdev.Simulator, error) {
	seed, err := loadSimSeed(stateDir)
	if err != nil {
		return nil, err
	}
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return nil, fmt.Errorf("tpmsim: start simulator: %w", err)
	}
	return &simTransport{sim: sim, seed: seed, path: filepath.Join(stateDir, SeedFile)}, nil
}

// reboot powers the simulator off and on again with the same seed: PCRs
// return to their initial values and loaded objects are gone, while every
// blob sealed under the seed's SRK still unseals. (The simulator's own
// Reset would bring back the seeds it manufactured, not ours.)
func (s *simTransport) Reboot() error {
	if err := s.sim.Close(); err != nil {
		return fmt.Errorf("tpmsim: simulator power off: %w", err)
	}
	sim, err := simulator.GetWithFixedSeedInsecure(s.seed)
	if err != nil {
		return fmt.Errorf("tpmsim: simulator power on: %w", err)
	}
	s.sim = sim
	return nil
}

func (s *simTransport) Send(cmd []byte) ([]byte, error) {
	// The simulator works on the command buffer in place (it decrypts
	// parameters there): give it a copy, so what callers hold is what was
	// sent and a retried command is resent intact.
	c := bytes.Clone(cmd)
	defer clear(c) // it may hold a decrypted secret now
	return tpmutil.RunCommandRaw(s.sim, c)
}

func (s *simTransport) Close() error { return s.sim.Close() }

func (s *simTransport) SeedPath() string { return s.path }

// loadSimSeed reads the simulator seed from stateDir, creating it (0600, in
// a 0700 directory) from crypto/rand the first time.
func loadSimSeed(stateDir string) (int64, error) {
	if stateDir == "" {
		return 0, errors.New("tpmsim: simulator needs a state directory for its seed")
	}
	path := filepath.Join(stateDir, SeedFile)
	// The seed is 16 hex digits and a newline; anything that is not a
	// small regular file (a FIFO, /dev/zero) is refused, not waited on.
	data, err := safefile.Read(path, maxSimSeedFile)
	if errors.Is(err, os.ErrNotExist) {
		return createSimSeed(stateDir, path)
	}
	if err != nil {
		return 0, fmt.Errorf("tpmsim: read simulator seed: %w", err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(raw) != 8 {
		return 0, fmt.Errorf("tpmsim: simulator seed %s is corrupt (want 16 hex digits); blobs sealed with it cannot be recovered", path)
	}
	return int64(binary.BigEndian.Uint64(raw)), nil
}

func createSimSeed(stateDir, path string) (int64, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return 0, fmt.Errorf("tpmsim: create state directory: %w", err)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(stateDir, ".sim-seed-*.tmp")
	if err != nil {
		return 0, fmt.Errorf("tpmsim: create simulator seed: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(hex.EncodeToString(raw[:]) + "\n"); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("tpmsim: write simulator seed: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("tpmsim: write simulator seed: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("tpmsim: write simulator seed: %w", err)
	}
	// Link, not rename: if another process created the seed meanwhile, keep
	// theirs and use it.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadSimSeed(stateDir)
		}
		return 0, fmt.Errorf("tpmsim: write simulator seed: %w", err)
	}
	if d, err := os.Open(stateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return int64(binary.BigEndian.Uint64(raw[:])), nil
}
