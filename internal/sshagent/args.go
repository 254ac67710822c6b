// Package sshagent is the OpenSSH-compatible front end of
// "icn-agent ssh-agent": OpenSSH's ssh-agent(1) command line in front of
// icn-agent's daemon, so that icn-agent can be used wherever ssh-agent is,
// and as ssh-agent itself through a link of that name.
//
// ssh-agent's forms, and what this package does for each:
//
//   - "ssh-agent [-c | -s]": start the agent in the background and print
//     the shell commands that point SSH_AUTH_SOCK and SSH_AGENT_PID at
//     it. The socket is bound here (Listen, in $TMPDIR/ssh-XXXXXXXXXX
//     by default, as OpenSSH does) and handed to a new process in a
//     session of its own (StartBackground; that process takes it with
//     OpenChild), which reports readiness on a pipe with its first line
//     of output; the caller then prints the environment (EnvLine).
//   - "ssh-agent COMMAND [ARG...]": the same, then COMMAND runs with the
//     environment; the background agent watches the process (now COMMAND)
//     and stops when it ends (WatchProcess, with a pidfd).
//   - "ssh-agent -D" or "-d": serve in the foreground.
//   - "ssh-agent -k": stop the agent SSH_AGENT_PID names (Kill).
//
// Key types icn-agent cannot hold (ssh-dss, FIDO) go to a private
// OpenSSH agent run as icn-agent's upstream (StartPrivateAgent, which
// Upstreams starts unless other agents are given), which also honours -E,
// -P, -O and -t for them.
package sshagent

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Options is the parsed command line of ssh-agent.
type Options struct {
	CSH, SH    bool // -c, -s
	Foreground bool // -D
	Debug      bool // -d
	Kill       bool // -k
	Socket     string
	// FingerprintHash is -E: md5 or sha256; empty by default.
	FingerprintHash string
	// Lifetime is -t: the default lifetime of added keys.
	Lifetime time.Duration
	// Allowlist is -P and AgentOptions are the -O options; both are for
	// the private OpenSSH agent.
	Allowlist    string
	AgentOptions []string
	// icn-agent's own long options.
	Upstreams          []string
	TPM, Store, Config string
	Verbose            bool
	// Command is COMMAND and its arguments.
	Command []string

	// Set for the background agent by the process that started it
	// (--background-child=PID, --remove-dir).
	Child     bool
	WatchPID  int  // stop when this process ends (COMMAND form); 0: never
	RemoveDir bool // remove the socket's directory on exit
}

// ErrHelp is returned by Parse for -h and --help.
var ErrHelp = errors.New("help requested")

// UsageError is a command line Parse refuses.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &UsageError{fmt.Sprintf(format, args...)}
}

// Parse parses ssh-agent's options as OpenSSH's getopt does (bundled
// short options, option arguments attached or not, options end at the
// first non-option: COMMAND), plus icn-agent's long options --upstream,
// --tpm, --store, --config, --socket and --verbose.
func Parse(args []string) (*Options, error) {
	o := &Options{}
	long := map[string]*string{"upstream": nil, "tpm": &o.TPM, "store": &o.Store, "config": &o.Config, "socket": &o.Socket, "background-child": nil}
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			args = args[1:]
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		args = args[1:]
		if strings.HasPrefix(a, "--") {
			name, val, has := strings.Cut(a[2:], "=")
			switch name {
			case "verbose":
				o.Verbose = true
				continue
			case "remove-dir":
				o.RemoveDir = true
				continue
			case "help":
				return nil, ErrHelp
			}
			dst, ok := long[name]
			if !ok {
				return nil, usagef("unknown option --%s", name)
			}
			if !has {
				if len(args) == 0 {
					return nil, usagef("option --%s needs an argument", name)
				}
				val, args = args[0], args[1:]
			}
			switch name {
			case "upstream":
				o.Upstreams = append(o.Upstreams, val)
			case "background-child":
				pid, err := strconv.Atoi(val)
				if err != nil {
					return nil, usagef("bad --background-child %q", val)
				}
				o.Child, o.WatchPID = true, pid
			default:
				*dst = val
			}
			continue
		}
		for i := 1; i < len(a); i++ {
			ch := a[i]
			switch ch {
			case 'c':
				if o.SH {
					return nil, usagef("-c and -s exclude each other")
				}
				o.CSH = true
			case 's':
				if o.CSH {
					return nil, usagef("-c and -s exclude each other")
				}
				o.SH = true
			case 'D':
				o.Foreground = true
			case 'd':
				o.Debug = true
			case 'k':
				o.Kill = true
			case 'h':
				return nil, ErrHelp
			case 'a', 'E', 'P', 'O', 't':
				val := a[i+1:]
				if val == "" {
					if len(args) == 0 {
						return nil, usagef("option -%c needs an argument", ch)
					}
					val, args = args[0], args[1:]
				}
				i = len(a)
				switch ch {
				case 'a':
					o.Socket = val
				case 'E':
					if val != "md5" && val != "sha256" {
						return nil, usagef("invalid fingerprint hash %q: want md5 or sha256", val)
					}
					o.FingerprintHash = val
				case 'P':
					if o.Allowlist != "" {
						return nil, usagef("-P may be given only once")
					}
					o.Allowlist = val
				case 'O':
					o.AgentOptions = append(o.AgentOptions, val)
				case 't':
					d, err := Convtime(val)
					if err != nil {
						return nil, usagef("invalid lifetime %q: %v", val, err)
					}
					o.Lifetime = d
				}
			default:
				return nil, usagef("unknown option -%c", ch)
			}
		}
	}
	o.Command = args
	if o.Foreground && o.Debug {
		return nil, usagef("-D and -d exclude each other")
	}
	if len(o.Command) > 0 && (o.Foreground || o.Debug || o.CSH || o.SH || o.Kill) {
		return nil, usagef("COMMAND cannot be combined with -c, -s, -D, -d or -k")
	}
	return o, nil
}

// Convtime parses a time as OpenSSH does: a number of seconds, or a
// sequence of numbers each followed by s, m, h, d or w ("1h30m").
func Convtime(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	units := map[byte]time.Duration{'s': time.Second, 'S': time.Second, 'm': time.Minute, 'M': time.Minute,
		'h': time.Hour, 'H': time.Hour, 'd': 24 * time.Hour, 'D': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'W': 7 * 24 * time.Hour}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, errors.New("not a number")
		}
		n, err := strconv.ParseInt(s[:i], 10, 32)
		if err != nil {
			return 0, err
		}
		unit := time.Second
		s = s[i:]
		if s != "" {
			u, ok := units[s[0]]
			if !ok {
				return 0, fmt.Errorf("unknown unit %q", s[0])
			}
			unit, s = u, s[1:]
		}
		total += time.Duration(n) * unit
		if total > time.Duration(1<<31-1)*time.Second {
			return 0, errors.New("too long")
		}
	}
	return total, nil
}

// childArgs are the options the background agent is started with.
func (o *Options) childArgs() []string {
	var a []string
	if o.FingerprintHash != "" {
		a = append(a, "-E", o.FingerprintHash)
	}
	if o.Lifetime > 0 {
		a = append(a, "-t", strconv.Itoa(int(o.Lifetime/time.Second)))
	}
	if o.Allowlist != "" {
		a = append(a, "-P", o.Allowlist)
	}
	for _, opt := range o.AgentOptions {
		a = append(a, "-O", opt)
	}
	for _, u := range o.Upstreams {
		a = append(a, "--upstream", u)
	}
	for name, v := range map[string]string{"tpm": o.TPM, "store": o.Store, "config": o.Config} {
		if v != "" {
			a = append(a, "--"+name, v)
		}
	}
	if o.Verbose {
		a = append(a, "--verbose")
	}
	return a
}

// EnvLine is the shell command that sets name to value, in csh syntax if
// csh is set, as ssh-agent prints it.
func EnvLine(csh bool, name, value string) string {
	if csh {
		return fmt.Sprintf("setenv %s %s;\n", name, value)
	}
	return fmt.Sprintf("%s=%s; export %s;\n", name, value, name)
}

// UnsetLine is the shell command that unsets name, as ssh-agent -k
// prints it.
func UnsetLine(csh bool, name string) string {
	if csh {
		return "unsetenv " + name + ";\n"
	}
	return "unset " + name + ";\n"
}
