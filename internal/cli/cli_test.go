package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var errLibrary = errors.New("lib: the device is gone")

// newSet is a command with one subcommand, "greet NAME [--loud] [--tag T]...".
func newSet(got *[]string, loud *bool, tags *Strings) *Set {
	s := &Set{Prog: "tool", About: "a test tool", Hints: func(err error) []string {
		if errors.Is(err, errLibrary) {
			return []string{"plug it in"}
		}
		return nil
	}}
	s.Register(&Command{Name: "greet", Args: "NAME [--loud]", Summary: "Say hello.", Run: func(e *Env, args []string) error {
		c := s.Lookup("greet")
		fs := FlagSet(c)
		fs.BoolVar(loud, "loud", false, "shout")
		fs.Var(tags, "tag", "a tag (repeatable)")
		pos, err := s.ParseN(e, c, fs, args, 1, "want exactly one NAME")
		if err != nil {
			return err
		}
		*got = pos
		switch pos[0] {
		case "nobody":
			return WithHint(errors.New("nobody to greet"), "name someone")
		case "device":
			return errLibrary
		}
		return nil
	}})
	return s
}

func TestRun(t *testing.T) {
	for _, tt := range []struct {
		args           []string
		code           int
		stdout, stderr string // substrings; "" for empty output
		pos            []string
		loud           bool
		tags           []string
	}{
		{args: nil, code: ExitUsage, stderr: "usage: tool COMMAND"},
		{args: []string{"help"}, code: ExitOK, stdout: "  greet  Say hello."},
		{args: []string{"help", "greet"}, code: ExitOK, stdout: "usage: tool greet NAME [--loud]\n\nSay hello.\n\nflags:\n"},
		{args: []string{"frobnicate"}, code: ExitUsage, stderr: `tool: unknown command "frobnicate"; run 'tool help' for the list`},
		{args: []string{"greet", "ann", "--loud", "--tag", "a", "--tag", "b"}, code: ExitOK, pos: []string{"ann"}, loud: true, tags: []string{"a", "b"}},
		{args: []string{"greet", "--", "--loud"}, code: ExitOK, pos: []string{"--loud"}},
		{args: []string{"greet"}, code: ExitUsage, stderr: "tool greet: want exactly one NAME\nusage: tool greet NAME [--loud]\n"},
		{args: []string{"greet", "ann", "--nope"}, code: ExitUsage, stderr: "flag provided but not defined: -nope"},
		{args: []string{"greet", "-h"}, code: ExitOK, stdout: "usage: tool greet"},
		{args: []string{"greet", "nobody"}, code: ExitError, stderr: "tool greet: nobody to greet\ntool greet: hint: name someone\n", pos: []string{"nobody"}},
		{args: []string{"greet", "device"}, code: ExitError, stderr: "tool greet: lib: the device is gone\ntool greet: hint: plug it in\n", pos: []string{"device"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var pos []string
			var loud bool
			var tags Strings
			s := newSet(&pos, &loud, &tags)
			var stdout, stderr bytes.Buffer
			code := s.Run(tt.args, &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			for _, c := range []struct{ name, got, want string }{{"stdout", stdout.String(), tt.stdout}, {"stderr", stderr.String(), tt.stderr}} {
				if c.want == "" && c.got != "" || !strings.Contains(c.got, c.want) {
					t.Errorf("%s %q, want it to contain %q", c.name, c.got, c.want)
				}
			}
			if strings.Join(pos, " ") != strings.Join(tt.pos, " ") || loud != tt.loud || strings.Join(tags, ",") != strings.Join(tt.tags, ",") {
				t.Errorf("parsed %q loud=%v tags=%q, want %q loud=%v tags=%q", pos, loud, tags, tt.pos, tt.loud, tt.tags)
			}
		})
	}
}

func TestGiven(t *testing.T) {
	fs := FlagSet(&Command{Name: "x"})
	fs.String("comment", "", "")
	fs.String("pcrs", "", "")
	if err := fs.Parse([]string{"--comment", ""}); err != nil {
		t.Fatal(err)
	}
	if !Given(fs, "comment") || Given(fs, "pcrs") {
		t.Fatal("Given does not tell a flag given empty from one not given")
	}
}

func TestWithHintNil(t *testing.T) {
	if WithHint(nil, "x") != nil {
		t.Fatal("WithHint(nil) is not nil")
	}
}
