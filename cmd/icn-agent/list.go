package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/cli"
	"github.com/icn/icn-agent/internal/provision"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/unlock"
	"github.com/icn/icn-agent/sealstore"
)

func init() {
	commands.Register(&cli.Command{
		Name:    "list",
		Args:    "[--json]",
		Summary: "List the sealed identities with their fingerprint, PCRs, did:key and whether this TPM can unseal them.",
		Run:     runList,
	})
	commands.Register(&cli.Command{
		Name:    "pubkey",
		Args:    "NAME",
		Summary: "Print an identity's public key as an authorized_keys line.",
		Run:     runPubkey,
	})
	commands.Register(&cli.Command{
		Name:    "check",
		Args:    "NAME [--pin-file F]",
		Summary: "Try to unseal an identity and report whether it works, or exactly why not. The secret is never shown.",
		Run:     runCheck,
	})
}

func runList(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("list")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	_, err := commands.ParseN(e, c, fs, args, 0, "list takes no arguments")
	if err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	out, err := unlock.Listings(context.Background(), store, f.openTPM, f.log)
	if err != nil {
		return err
	}
	for i, l := range out {
		if l.Status == sealstore.StatusUnreadable {
			out[i].Error += "; " + restoreHint(l.Name, l.Path)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(e.Stderr, "no identities in %s; create one with: icn-agent keygen NAME\n", store.Dir())
		return nil
	}
	return sealstore.WriteListings(e.Stdout, out)
}

// loadToUnseal loads identity name to unseal it (check, reseal); a
// damaged blob's error says how to restore it.
func loadToUnseal(store *sealstore.Store, name string) (*sealstore.Blob, error) {
	b, err := store.Load(name)
	if errors.Is(err, sealstore.ErrMalformedBlob) || errors.Is(err, sealstore.ErrUnsupportedVersion) {
		return nil, fmt.Errorf("%w; %s", err, restoreHint(name, store.Path(name)))
	}
	return b, err
}

// loadToCopy loads identity name to copy it off this TPM (backup,
// migrate); damaged says what to do instead with a damaged one.
func loadToCopy(store *sealstore.Store, name, damaged string) (*sealstore.Blob, error) {
	b, err := store.Load(name)
	switch {
	case errors.Is(err, sealstore.ErrNotFound):
		return nil, fmt.Errorf("no identity %q in %s; icn-agent list shows them", name, store.Dir())
	case err != nil:
		return nil, fmt.Errorf("%w; %s", err, damaged)
	}
	return b, nil
}

// restoreHint tells how to recover an identity whose blob is damaged.
func restoreHint(name, path string) string {
	return fmt.Sprintf("restore it from a backup: mv %s %s.damaged && icn-agent restore %s BACKUP", path, path, name)
}

func runPubkey(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("pubkey")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	b, err := store.Load(pos[0])
	if err != nil {
		return err
	}
	_, err = e.Stdout.Write(b.AuthorizedKey())
	return err
}

func runCheck(e *cli.Env, args []string) error {
	c, fs, f := commonCommand("check")
	pinFile := fs.String("pin-file", "", "for a PIN-protected identity: read its PIN from the first line of this file instead of the terminal")
	pos, err := commands.ParseN(e, c, fs, args, 1, "want exactly one NAME")
	if err != nil {
		return err
	}
	store, err := f.openStore(e)
	if err != nil {
		return err
	}
	b, err := loadToUnseal(store, pos[0])
	if err != nil {
		return err
	}
	ctx := context.Background()
	tpm, err := f.openTPM(ctx)
	if err != nil {
		return err
	}
	defer tpm.Close()
	seed, pin, err := unsealForCommand(ctx, tpm, store, b, *pinFile, f.log)
	if errors.Is(err, provision.ErrSeedMismatch) {
		return fmt.Errorf("%s unseals, but the seed does not match its public key: the blob is damaged; restore it from a backup", b.Name)
	}
	if err != nil {
		return err
	}
	seed.Destroy()
	secmem.Wipe(pin)
	fmt.Fprintf(e.Stdout, "ok: %s unseals on this TPM (%s, %s)\n", b.Name, ssh.FingerprintSHA256(b.PublicKey), b.Policy.Describe())
	return nil
}
