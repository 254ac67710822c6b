package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/config"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmpolicy"
	"github.com/icn/icn-agent/sealstore"
)

// common holds the flags every command that touches the TPM or the store
// shares. Precedence: flag, then environment, then config file, then
// default.
type common struct {
	tpm     string
	store   string
	config  string
	verbose bool
	// daemon logs at info rather than warn by default.
	daemon bool

	cfg config.Config
	log *slog.Logger
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.tpm, "tpm", "", "TPM to use: auto, a device such as /dev/tpmrm0, swtpm:unix:PATH, swtpm:tcp:HOST:PORT, or sim (insecure development TPM) (env ICN_AGENT_TPM; default from config, else auto)")
	fs.StringVar(&c.store, "store", "", "directory of sealed identities (default $XDG_DATA_HOME/icn-agent/identities)")
	fs.StringVar(&c.config, "config", "", "config file (default $XDG_CONFIG_HOME/icn-agent/config.toml)")
	fs.BoolVar(&c.verbose, "v", false, "verbose: log debug messages")
}

// setup loads the config and builds the logger. Call it after parsing.
func (c *common) setup(e *cli.Env) error {
	path, explicit := c.config, c.config != ""
	if !explicit {
		path = config.DefaultPath()
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		return err
	}
	c.cfg = cfg
	level := slog.LevelWarn
	if c.daemon {
		level = slog.LevelInfo
	}
	if c.verbose {
		level = slog.LevelDebug
	}
	c.log = slog.New(slog.NewTextHandler(e.Stderr, &slog.HandlerOptions{Level: level}))
	if c.tpm == "" {
		c.tpm = e.Getenv("ICN_AGENT_TPM")
	}
	if c.tpm == "" {
		c.tpm = cfg.Identity.TPM.Device
	}
	if c.store == "" {
		c.store = sealstore.DefaultDir()
	}
	if spec, err := tpmdev.ParseSpec(c.tpm); err == nil && spec.Kind == tpmdev.KindSim && !tpmdev.SimulatorLinked() {
		return tpmdev.ErrNoSimulator // libraryHints says how to get one
	}
	return nil
}

// openStore loads the config (see setup) and opens the identity store.
func (c *common) openStore(e *cli.Env) (*sealstore.Store, error) {
	if err := c.setup(e); err != nil {
		return nil, err
	}
	return sealstore.Open(c.store)
}

// openTPM opens the selected TPM.
func (c *common) openTPM(ctx context.Context) (*tpmdev.TPM, error) {
	spec, err := tpmdev.ParseSpec(c.tpm)
	if err != nil {
		return nil, err
	}
	// Only the agent, which owns the TPM for long, flushes what dead
	// clients left on a swtpm; a command run beside it must not flush the
	// agent's storage root key.
	return tpmdev.Open(ctx, spec, tpmdev.Options{Logger: c.log, FlushStale: c.daemon, CommandTimeout: c.cfg.Identity.TPM.TPMTimeout()})
}

// pcrList is a flag.Value for "0,7"-style PCR lists.
type pcrList struct {
	pcrs []int
	set  bool
}

func (p *pcrList) String() string { return joinInts(p.pcrs) }

func (p *pcrList) Set(v string) error {
	pcrs, err := tpmpolicy.ParseList(v)
	if err != nil {
		return err
	}
	p.pcrs, p.set = pcrs, true
	return nil
}

// pcrs returns the flag's PCRs if given, else the config's.
func (p *pcrList) or(cfg []int) []int {
	if p.set {
		return p.pcrs
	}
	return cfg
}

// joinInts formats PCR indexes as the flags take them: "0,7".
func joinInts(v []int) string { return tpmpolicy.FormatList(v) }
