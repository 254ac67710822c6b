package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/recovery"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "srk",
		Args:    "[-o FILE]",
		Summary: "Export this TPM's storage root key (public) for icn-agent migrate on another machine, and print its Name.",
		Run:     runSRK,
	})
	commands.Register(&cli.Command{
		Name:    "migrate",
		Args:    "NAME --to SRKFILE -o FILE [--pcrs 0,7]",
		Summary: "Wrap an identity for another TPM (whose srk file is SRKFILE); only that TPM can import FILE.",
		Run:     runMigrate,
	})
	commands.Register(&cli.Command{
		Name:    "import-migrated",
		Args:    "NAME FILE [--pcrs 0,7] [--comment TEXT]",
		Summary: "Seal an identity wrapped for this TPM by icn-agent migrate as NAME.",
		Run:     runImportMigrated,
	})
}

func runSRK(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("srk")
	out := fs.String("o", "", "write the SRK file here (a new file) instead of to standard output")
	_, err := commands.ParseN(e, c, fs, args, 0, "srk takes no arguments")
	if err != nil {
		return err
	}
	if err := f.setup(e); err != nil {
		return err
	}
	if *out != "" {
		if err := checkNewFile(*out, "file"); err != nil {
			return err
		}
	}
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	data, srk, err := recovery.ExportSRK(ctx, tpm)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := e.Stdout.Write(data)
		return err
	}
	if err := recovery.WriteNewFile(*out, data); err != nil {
		return fileExistsError(err, *out, "file")
	}
	fmt.Fprintf(e.Stdout, "wrote %s: this TPM's storage root key, Name %s\n", *out, hex.EncodeToString(srk.Name))
	fmt.Fprintf(e.Stdout, "copy it to the machine that has the identity and run there: icn-agent migrate NAME --to %s -o NAME.migrate\n", *out)
	return nil
}

func runMigrate(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("migrate")
	var pcrs pcrList
	to := fs.String("to", "", "the target TPM's SRK file, from icn-agent srk on the target (required)")
	out := fs.String("o", "", "write the migration file here, a new file (required)")
	fs.Var(&pcrs, "pcrs", "PCRs (SHA-256 bank) the target seals the identity to (default: the PCRs it is sealed to here)")
	pinFile := fs.String("pin-file", "", "for a PIN-protected identity, read its PIN from this file instead of asking")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	if *to == "" || *out == "" {
		return cli.Usagef("--to SRKFILE and -o FILE are required")
	}
	name := pos[0]
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	b, err := loadToCopy(store, name, "a damaged identity cannot be migrated: restore it from a backup on the target instead")
	if err != nil {
		return err
	}
	if err := checkNewFile(*out, "migration file"); err != nil {
		return err
	}
	target, err := recovery.ReadSRKFile(*to)
	if err != nil {
		return fmt.Errorf("%s: %w; make it with icn-agent srk -o FILE on the target machine", *to, err)
	}
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	var want []int
	if pcrs.set {
		want = pcrs.pcrs
	}
	opts, err := unsealOptions(ctx, tpm, store, b, *pinFile, f.log)
	if err != nil {
		return err
	}
	defer secmem.Wipe(opts.PIN)
	m, err := recovery.Migrate(ctx, tpm, b, opts, target, want)
	if errors.Is(err, recovery.ErrSameTPM) {
		return fmt.Errorf("%s is this TPM's own storage root key; migrate moves an identity to another machine's TPM (run icn-agent srk there)", *to)
	}
	if err != nil {
		return err
	}
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := recovery.WriteNewFile(*out, data); err != nil {
		return fileExistsError(err, *out, "migration file")
	}
	fmt.Fprintf(e.Stdout, "wrote %s: %s (%s) wrapped for the TPM whose SRK Name is %s\n", *out, name, ssh.FingerprintSHA256(b.PublicKey), hex.EncodeToString(target.Name))
	fmt.Fprintf(e.Stdout, "only that TPM can import it; check that icn-agent srk printed that Name on the target, then run there: icn-agent import-migrated %s %s\n", name, *out)
	return nil
}

func runImportMigrated(e *cli.Env, args []string) error {
	c := commands.Lookup("import-migrated")
	var f sealFlags
	fs := f.register(c)
	fs.Lookup("comment").Usage = "comment for the public key (default: the one in FILE)"
	fs.Lookup("pcrs").Usage = "PCRs (SHA-256 bank) to bind the seed to (default: those chosen at icn-agent migrate)"
	pos, err := commands.ParseN(e, c, fs, args, 2, "want NAME and FILE")
	if err != nil {
		return err
	}
	name, file := pos[0], pos[1]
	if err := sealstore.ValidName(name); err != nil {
		return err
	}
	m, err := recovery.ReadMigrationFile(file)
	if err != nil {
		return fmt.Errorf("%s: %w; want a file written by icn-agent migrate", file, err)
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	if err := nameFree(store, name, "import it"); err != nil {
		return err
	}
	opts := tpmseal.SealOptions{Name: name, Comment: m.Comment}
	if cli.Given(fs, "comment") {
		opts.Comment = f.comment
	}
	if f.pcrs.set {
		opts.PCRs = f.pcrs.pcrs
	}
	_, pin, err := f.policy.apply(&opts)
	if err != nil {
		return err
	}
	defer secmem.Wipe(pin)
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	blob, err := recovery.ImportMigration(ctx, tpm, store, m, opts)
	switch {
	case errors.Is(err, sealstore.ErrNotForThisTPM):
		return fmt.Errorf("%s was made for another TPM (SRK Name %s); run icn-agent srk on this machine and migrate again with that file; nothing was written", file, hex.EncodeToString(m.TargetSRKName()))
	case errors.Is(err, sealstore.ErrDuplicateRejected):
		return fmt.Errorf("this TPM refused %s: it was made for another TPM, or altered; nothing was written", file)
	case errors.Is(err, recovery.ErrHeaderAltered):
		return fmt.Errorf("%s was altered after icn-agent migrate wrote it (name, comment, key or PCRs); nothing was written: migrate again", file)
	case err != nil:
		return err
	}
	fmt.Fprintf(e.Stderr, "icn-agent import-migrated: %s (%s) is sealed to this TPM, PCRs %s; check the fingerprint is the one migrate printed, then delete %s\n",
		name, ssh.FingerprintSHA256(blob.PublicKey), joinInts(blob.Policy.Indexes()), file)
	_, err = e.Stdout.Write(blob.AuthorizedKey())
	return err
}
