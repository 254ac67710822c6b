// Package cli runs a command made of subcommands, as icn-agent is: it
// finds the subcommand, gives it flags that may follow its positional
// arguments ("keygen NAME --pcrs 0,7"), and turns what it returns into
// output and an exit status:
//
//   - nil, or flag.ErrHelp after -h printed the usage: status 0;
//   - a usage error (Usagef): the error and the synopsis, status 2;
//   - any other error: the error, then each hint on a line of its own,
//     status 1. Hints come from WithHint, where the command knows what to
//     do about the error, and from the Set's Hints, for errors of the
//     libraries that any subcommand may meet (the style of age's
//     errorWithHint: libraries say what went wrong, only the command says
//     what to do).
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Exit statuses.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Env is what a subcommand may touch of the process.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// Command is one subcommand.
type Command struct {
	Name    string
	Args    string // the synopsis after the name
	Summary string
	Run     func(e *Env, args []string) error
}

// Set is a command's subcommands.
type Set struct {
	// Prog is the command's name; About, what it is, heads the help.
	Prog, About string
	// Hints, if set, returns hints for an error of any subcommand, after
	// the error's own.
	Hints func(error) []string

	cmds []*Command
}

// Register adds c.
func (s *Set) Register(c *Command) { s.cmds = append(s.cmds, c) }

// Lookup returns the subcommand called name, or nil.
func (s *Set) Lookup(name string) *Command {
	for _, c := range s.cmds {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Run runs the subcommand args[0] with the rest of args and returns the
// exit status. "help", "-h" and "--help" print the list of subcommands,
// or with a name, that subcommand's usage.
func (s *Set) Run(args []string, e *Env) int {
	if len(args) == 0 {
		s.help(e.Stderr)
		return ExitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if c := s.Lookup(rest[0]); c != nil {
				return s.Run([]string{c.Name, "-h"}, e)
			}
		}
		s.help(e.Stdout)
		return ExitOK
	}
	c := s.Lookup(name)
	if c == nil {
		fmt.Fprintf(e.Stderr, "%s: unknown command %q; run '%s help' for the list\n", s.Prog, name, s.Prog)
		return ExitUsage
	}
	err := c.Run(e, rest)
	var ue *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.Stderr, "%s %s: %v\nusage: %s %s %s\n", s.Prog, c.Name, err, s.Prog, c.Name, c.Args)
		return ExitUsage
	}
	fmt.Fprintf(e.Stderr, "%s %s: %v\n", s.Prog, c.Name, err)
	var hints []string
	var he *hintError
	if errors.As(err, &he) {
		hints = he.hints
	}
	if s.Hints != nil {
		hints = append(hints, s.Hints(err)...)
	}
	for _, h := range hints {
		fmt.Fprintf(e.Stderr, "%s %s: hint: %s\n", s.Prog, c.Name, h)
	}
	return ExitError
}

func (s *Set) help(w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n\nusage: %s COMMAND [flags] [args]\n\ncommands:\n", s.Prog, s.About, s.Prog)
	sorted := append([]*Command(nil), s.cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	width := 0
	for _, c := range sorted {
		width = max(width, len(c.Name))
	}
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND -h' for a command's flags.\n", s.Prog)
}

// FlagSet returns a flag set for c. Parse errors are reported by Run, and
// -h by Parse, so the flag package itself prints nothing.
func FlagSet(c *Command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// Parse parses args with fs, allowing flags after positional arguments,
// and returns the positionals ("--" ends the flags). -h prints c's usage
// to e.Stdout and returns flag.ErrHelp; a bad flag is a usage error.
func (s *Set) Parse(e *Env, c *Command, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				s.usage(e.Stdout, c, fs)
				return nil, err
			}
			return nil, &UsageError{err.Error()}
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

// ParseN is Parse that also wants exactly n positional arguments, and
// fails with the usage error msg otherwise.
func (s *Set) ParseN(e *Env, c *Command, fs *flag.FlagSet, args []string, n int, msg string) ([]string, error) {
	pos, err := s.Parse(e, c, fs, args)
	if err == nil && len(pos) != n {
		err = &UsageError{msg}
	}
	return pos, err
}

// usage writes c's synopsis, summary and flags to w.
func (s *Set) usage(w io.Writer, c *Command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s %s %s\n\n%s\n", s.Prog, c.Name, c.Args, c.Summary)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nflags:\n%s", b.String())
	}
}

// UsageError is an error the user fixes by changing the command line.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{fmt.Sprintf(format, args...)}
}

// hintError is an error with advice for the user.
type hintError struct {
	err   error
	hints []string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// WithHint returns err with hints for the user, which Run prints after it
// on lines of their own, or nil if err is nil.
func WithHint(err error, hints ...string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hints: hints}
}

// Strings is a repeatable string flag.
type Strings []string

func (s *Strings) String() string     { return strings.Join(*s, ", ") }
func (s *Strings) Set(v string) error { *s = append(*s, v); return nil }

// Given reports whether the flag called name was given in fs.
func Given(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
