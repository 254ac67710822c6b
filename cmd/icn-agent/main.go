// Command icn-agent is an ssh-agent whose Ed25519 identities are sealed in a
// TPM 2.0. Run "icn-agent help" for the subcommands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	// The reference simulator behind --tpm sim (cgo builds only).
	_ "github.com/icn/icn-agent/internal/tpmsim"
)

// exit codes
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// command is one subcommand.
type command struct {
	name    string
	args    string // usage synopsis after the name
	summary string
	run     func(e *env, args []string) error
}

var commands []*command

func register(c *command) { commands = append(commands, c) }

func main() {
	os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
}

// env is what a subcommand may touch of the process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// errUsage marks an error the user fixes by changing the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errorWithHint is an error with advice for the user, printed after it on
// lines of their own (the style of age's command). Libraries say what went
// wrong; only the command knows its flags and sibling commands well
// enough to say what to do about it.
type errorWithHint struct {
	err   error
	hints []string
}

func (e *errorWithHint) Error() string { return e.err.Error() }
func (e *errorWithHint) Unwrap() error { return e.err }

// withHint returns err with hints attached, or nil if err is nil.
func withHint(err error, hints ...string) error {
	if err == nil {
		return nil
	}
	return &errorWithHint{err: err, hints: hints}
}

func run(args []string, e *env) int {
	if len(args) == 0 {
		printHelp(e.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if c := lookup(rest[0]); c != nil {
				return run([]string{c.name, "-h"}, e)
			}
		}
		printHelp(e.stdout)
		return exitOK
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(e.stderr, "icn-agent: unknown command %q; run 'icn-agent help' for the list\n", name)
		return exitUsage
	}
	err := c.run(e, rest)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "icn-agent %s: %v\nusage: icn-agent %s %s\n", c.name, err, c.name, c.args)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "icn-agent %s: %v\n", c.name, err)
		var hints []string
		var he *errorWithHint
		if errors.As(err, &he) {
			hints = he.hints
		}
		for _, h := range append(hints, libraryHints(err)...) {
			fmt.Fprintf(e.stderr, "icn-agent %s: hint: %s\n", c.name, h)
		}
		return exitError
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, "icn-agent: an ssh-agent for Ed25519 identities sealed in a TPM 2.0\n\nusage: icn-agent COMMAND [flags] [args]\n\ncommands:\n")
	sorted := append([]*command(nil), commands...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	width := 0
	for _, c := range sorted {
		width = max(width, len(c.name))
	}
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'icn-agent COMMAND -h' for a command's flags.\n")
}

// newFlagSet returns a flag set for c. Parse errors are reported by run,
// and -h by parseFlags, so the flag package itself prints nothing.
func newFlagSet(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// printUsage writes a command's synopsis, summary and flags to w.
func printUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: icn-agent %s %s\n\n%s\n", c.name, c.args, c.summary)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nflags:\n%s", b.String())
	}
}

// parseFlags parses args with fs, allowing flags after positional
// arguments ("keygen NAME --pcrs 0,7"), and returns the positionals. -h
// prints the command's usage to stdout and returns flag.ErrHelp.
func parseFlags(e *env, c *command, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printUsage(e.stdout, c, fs)
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// commonCommand returns command name, its flag set and the common flags
// registered in it.
func commonCommand(name string) (*command, *flag.FlagSet, *common) {
	c := lookup(name)
	fs := newFlagSet(c)
	f := new(common)
	f.register(fs)
	return c, fs, f
}

// parseArgs is parseFlags that also wants exactly n positional
// arguments, failing with msg otherwise.
func parseArgs(e *env, c *command, fs *flag.FlagSet, args []string, n int, msg string) ([]string, error) {
	pos, err := parseFlags(e, c, fs, args)
	if err == nil && len(pos) != n {
		err = usagef("%s", msg)
	}
	return pos, err
}
