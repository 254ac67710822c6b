// Package config reads icn-agent's configuration file.
//
// The file is TOML, by default at
// $XDG_CONFIG_HOME/icn-agent/config.toml. Every key is optional; a missing
// key keeps its default, and so does a missing file at the default path:
//
//	audit = true                  # keep the audit log of signatures ($XDG_STATE_HOME/icn-agent)
//	notify_command = ""           # run for each announced signature (see below)
//	desktop_notify = true         # announce on the desktop when a D-Bus session bus exists
//
//	[identity.tpm]
//	enabled = true                # must stay true: identities are TPM-sealed
//	pcrs = [0, 7]                 # PCRs (SHA-256 bank) the seeds are sealed to
//	device = "auto"               # auto | /dev/tpmrm0 | swtpm:unix:PATH | swtpm:tcp:HOST:PORT | sim
//	auto_lock_timeout_secs = 300  # seconds a cached seed is kept after unsealing; 0 = until lock
//	pcr_poll_secs = 30            # how often the agent reads the PCRs it depends on
//	tpm_timeout_secs = 10         # how long a request may wait for the TPM, and each TPM command
//
// Per-identity settings are tables named after the identity:
//
//	[identities.work]
//	confirm = true                # ask through SSH_ASKPASS before every signature
//	notify = true                 # announce every signature
//	destinations = ["git@forge.example", "bastion>db.internal"]  # like ssh-add -h
//
// The top-level keys must come before the first table (TOML).
//
// Unknown keys are rejected rather than ignored, so that a typo such as
// "pcr = [7]" cannot silently leave the defaults in force.
//
// The file is read with safefile: a FIFO, a device or a file over
// maxConfigFile is an error that names it, never a hang (a FIFO blocks its
// reader until a writer appears) nor an agent out of memory (/dev/zero
// never ends).
package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/adrg/xdg"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// maxConfigFile bounds the config file: a few hundred bytes in practice.
const maxConfigFile = 1 << 20

// maxPCR is the highest PCR index a PC-client TPM has (24 PCRs, 0..23).
const maxPCR = tpmdev.NumPCRs - 1

// maxAutoLockSecs is the largest timeout whose time.Duration does not
// overflow (about 292 years).
const maxAutoLockSecs = math.MaxInt64 / int64(time.Second)

// Config is the icn-agent configuration file.
type Config struct {
	// Audit keeps the audit log of signatures (internal/audit) in
	// $XDG_STATE_HOME/icn-agent. On by default.
	Audit bool `toml:"audit"`
	// NotifyCommand, if set, is run (through /bin/sh -c) for every
	// signature with an identity whose notify is set, with the details
	// in ICN_AGENT_* environment variables (see internal/notify).
	NotifyCommand string `toml:"notify_command"`
	// DesktopNotify announces those signatures as freedesktop
	// notifications when a D-Bus session bus exists. On by default.
	DesktopNotify bool `toml:"desktop_notify"`
	Identity      struct {
		// TPM configures the TPM-sealed identity store.
		TPM TPM `toml:"tpm"`
	} `toml:"identity"`
	// Identities holds per-identity settings, by identity name.
	Identities map[string]Identity `toml:"identities"`
	// Upstream lists the sockets of other agents (OpenSSH's ssh-agent
	// holding FIDO or PKCS#11 keys, a hardware token's agent) whose keys
	// icn-agent lists after its own and forwards requests to.
	Upstream []string `toml:"upstream"`
}

// Identity is an [identities.NAME] table.
type Identity struct {
	// Confirm makes every signature with the identity ask the user
	// through SSH_ASKPASS first (like ssh-add -c); with no SSH_ASKPASS
	// the signature is refused.
	Confirm bool `toml:"confirm"`
	// Notify announces every signature with the identity (desktop
	// notification, notify_command).
	Notify bool `toml:"notify"`
	// Destinations restrict the identity to SSH logins to these hosts,
	// as ssh-add -h does: "[user@]host" or "host>[user@]host" (a hop
	// through a forwarded agent), with the host keys from
	// ~/.ssh/known_hosts. An identity whose hosts have no known keys is
	// not served.
	Destinations []string `toml:"destinations"`
}

// TPM is the [identity.tpm] table.
type TPM struct {
	// Enabled must be true; icn-agent serves nothing but TPM-sealed
	// identities. The key exists so that "enabled = false" fails loudly
	// instead of being mistaken for a way to run without a TPM.
	Enabled bool `toml:"enabled"`
	// PCRs lists the SHA-256 PCR indices (0..23) new seeds are sealed to.
	PCRs []int `toml:"pcrs"`
	// Device selects the TPM: "auto", a device path such as /dev/tpmrm0,
	// "swtpm:unix:PATH", "swtpm:tcp:HOST:PORT" or "sim".
	Device string `toml:"device"`
	// AutoLockTimeoutSecs is how long an unsealed seed stays cached,
	// counted from the unseal; see [TPM.AutoLockTimeout].
	AutoLockTimeoutSecs int `toml:"auto_lock_timeout_secs"`
	// PCRPollSecs is how often the agent reads the PCRs its identities
	// are bound to; see [TPM.PCRPoll].
	PCRPollSecs int `toml:"pcr_poll_secs"`
	// TPMTimeoutSecs bounds each use of the TPM: the wait for it and its
	// commands; see [TPM.TPMTimeout].
	TPMTimeoutSecs int `toml:"tpm_timeout_secs"`
}

// maxTPMTimeoutSecs is the largest tpm_timeout_secs accepted: beyond a few
// minutes a TPM is not slow but gone.
const maxTPMTimeoutSecs = 600

// Default returns the configuration used when no file exists: TPM
// enabled, sealed to PCRs 0 (firmware) and 7 (Secure Boot state), device
// "auto", auto-lock after 300 seconds, PCRs read every 30 seconds, a TPM
// timeout of 10 seconds.
func Default() Config {
	var c Config
	c.Audit = true
	c.DesktopNotify = true
	c.Identity.TPM = TPM{
		Enabled:             true,
		PCRs:                []int{0, 7},
		Device:              "auto",
		AutoLockTimeoutSecs: 300,
		PCRPollSecs:         30,
		TPMTimeoutSecs:      int(tpmdev.DefaultCommandTimeout / time.Second),
	}
	return c
}

// DefaultPath returns $XDG_CONFIG_HOME/icn-agent/config.toml
// (~/.config/icn-agent/config.toml when XDG_CONFIG_HOME is unset).
func DefaultPath() string {
	return filepath.Join(xdg.ConfigHome, "icn-agent", "config.toml")
}

// Load reads and validates the configuration file at path. Keys the
// file leaves out keep their [Default] values.
//
// explicit says whether the user named the file (a command-line flag) or
// path is [DefaultPath]: a missing default file yields Default,
// a missing explicit one is an error wrapping [os.ErrNotExist].
//
// Errors name the file; TOML syntax and type errors also give the line.
// Unknown keys are errors that name them.
func Load(path string, explicit bool) (Config, error) {
	data, err := safefile.Read(path, maxConfigFile)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return Default(), nil
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c := Default()
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return Config{}, fmt.Errorf("config: %s: %s", path, tomlErrorText(err))
	}
	if unknown := unknownKeys(md.Undecoded()); len(unknown) > 0 {
		noun := "key"
		if len(unknown) > 1 {
			noun = "keys"
		}
		return Config{}, fmt.Errorf("config: %s: unknown %s %s", path, noun, strings.Join(unknown, ", "))
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("config: %s: %w", path, err)
	}
	return c, nil
}

// tomlErrorText renders a decode error as "line N: message", without the
// library's "toml: " prefix.
func tomlErrorText(err error) string {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if pe.LastKey != "" {
			return fmt.Sprintf("line %d: %s (key %s)", pe.Position.Line, pe.Message, pe.LastKey)
		}
		return fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)
	}
	// Type mismatches come as plain errors that already carry the line:
	// `toml: line 3 (last key "identity.tpm.pcrs"): incompatible types: ...`;
	// reshape them like parse errors.
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	if m := typeErrorRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("line %s: %s (key %s)", m[1], m[3], m[2])
	}
	return msg
}

var typeErrorRE = regexp.MustCompile(`^line (\d+) \(last key "([^"]*)"\): (.*)$`)

// unknownKeys returns the quoted dotted names of undecoded keys, leaving out
// keys nested in a table that is itself unknown (report "[foo]", not each of
// its keys).
func unknownKeys(keys []toml.Key) []string {
	seen := make(map[string]bool, len(keys))
	var names []string
	for _, k := range keys {
		parentUnknown := false
		for n := 1; n < len(k); n++ {
			if seen[k[:n].String()] {
				parentUnknown = true
				break
			}
		}
		seen[k.String()] = true
		if !parentUnknown {
			names = append(names, fmt.Sprintf("%q", k.String()))
		}
	}
	return names
}

// Validate checks c the way [Load] checks a file, for configurations
// built or modified in code.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

func (c Config) validate() error {
	t := c.Identity.TPM
	if !t.Enabled {
		return errors.New("identity.tpm.enabled = false: icn-agent only serves TPM-sealed identities; remove the line or set it to true")
	}
	if len(t.PCRs) == 0 {
		return errors.New("identity.tpm.pcrs is empty: seal to at least one PCR, for example [0, 7]")
	}
	for n, pcr := range t.PCRs {
		if pcr < 0 || pcr > maxPCR {
			return fmt.Errorf("identity.tpm.pcrs: PCR %d out of range 0..%d", pcr, maxPCR)
		}
		if slices.Contains(t.PCRs[:n], pcr) {
			return fmt.Errorf("identity.tpm.pcrs: PCR %d listed twice", pcr)
		}
	}
	if strings.TrimSpace(t.Device) == "" {
		return errors.New(`identity.tpm.device is empty: use "auto" or a device such as /dev/tpmrm0`)
	}
	if t.AutoLockTimeoutSecs < 0 {
		return fmt.Errorf("identity.tpm.auto_lock_timeout_secs = %d: must be 0 or more", t.AutoLockTimeoutSecs)
	}
	if t.PCRPollSecs < 1 {
		return fmt.Errorf("identity.tpm.pcr_poll_secs = %d: must be at least 1", t.PCRPollSecs)
	}
	if int64(t.PCRPollSecs) > maxAutoLockSecs {
		return fmt.Errorf("identity.tpm.pcr_poll_secs = %d: must be at most %d", t.PCRPollSecs, maxAutoLockSecs)
	}
	if t.TPMTimeoutSecs < 1 || t.TPMTimeoutSecs > maxTPMTimeoutSecs {
		return fmt.Errorf("identity.tpm.tpm_timeout_secs = %d: must be 1 to %d", t.TPMTimeoutSecs, maxTPMTimeoutSecs)
	}
	if int64(t.AutoLockTimeoutSecs) > maxAutoLockSecs {
		return fmt.Errorf("identity.tpm.auto_lock_timeout_secs = %d: must be at most %d", t.AutoLockTimeoutSecs, maxAutoLockSecs)
	}
	for name, ic := range c.Identities {
		if err := sealstore.ValidName(name); err != nil {
			return fmt.Errorf("identities.%q: not an identity name: %w", name, err)
		}
		for _, d := range ic.Destinations {
			if strings.TrimSpace(d) == "" || strings.ContainsAny(d, " \t") {
				return fmt.Errorf("identities.%s.destinations: %q is not [user@]host or host>[user@]host", name, d)
			}
		}
	}
	return nil
}

// PCRPoll returns pcr_poll_secs as a duration.
func (c TPM) PCRPoll() time.Duration {
	return time.Duration(c.PCRPollSecs) * time.Second
}

// TPMTimeout returns tpm_timeout_secs as a duration: how long one use of
// the TPM may take, the wait for it included. A request that needs the
// TPM while it does not answer (wedged, or busy with a command that hangs)
// fails after about that long.
func (c TPM) TPMTimeout() time.Duration {
	return time.Duration(c.TPMTimeoutSecs) * time.Second
}

// AutoLockTimeout returns auto_lock_timeout_secs as a duration. Zero means
// the agent never locks on its own.
func (c TPM) AutoLockTimeout() time.Duration {
	return time.Duration(c.AutoLockTimeoutSecs) * time.Second
}
