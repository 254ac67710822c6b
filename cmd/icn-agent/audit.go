package main

import (
	"encoding/hex"
	"time"

	"github.com/icn/icn-agent/internal/audit"
	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/tpmdev"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "audit",
		Args:    "verify [--dir DIR] [--ak-name HEX] | show [--dir DIR] [--since DURATION|TIME] [--json]",
		Summary: "Check the audit log of signatures (exit 0 if intact, else name the first bad record), or print it.",
		Run:     runAudit,
	})
}

func runAudit(e *cli.Env, args []string) error {
	if len(args) == 0 {
		return cli.Usagef("want a subcommand: verify or show")
	}
	c := commands.Lookup("audit")
	fs := cli.FlagSet(c)
	dir := fs.String("dir", tpmdev.DefaultStateDir(), "the directory of audit.log")
	switch args[0] {
	case "verify":
		akName := fs.String("ak-name", "", "the attestation key (icn-agent ak) that must have signed the checkpoints, hex")
		if _, err := commands.Parse(e, c, fs, args[1:]); err != nil {
			return err
		}
		var pin []byte
		if *akName != "" {
			var err error
			if pin, err = hex.DecodeString(*akName); err != nil {
				return cli.Usagef("--ak-name: %v", err)
			}
		}
		rep, err := audit.Verify(*dir, pin)
		if err != nil {
			return err
		}
		return rep.WriteText(e.Stdout)
	case "show":
		since := fs.String("since", "", "only records from this time on: a duration back from now (24h) or an RFC 3339 time")
		asJSON := fs.Bool("json", false, "print the records as JSON lines")
		if _, err := commands.Parse(e, c, fs, args[1:]); err != nil {
			return err
		}
		from, err := audit.ParseSince(*since, time.Now())
		if err != nil {
			return cli.Usagef("--since %q: want a duration (24h) or an RFC 3339 time", *since)
		}
		return audit.Show(e.Stdout, *dir, from, *asJSON)
	}
	return cli.Usagef("unknown audit subcommand %q: want verify or show", args[0])
}
