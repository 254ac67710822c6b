package recovery

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/sealstore"
)

var updateGolden = flag.Bool("update-golden", false, "write the golden backup in the top-level testdata/backup if it is missing")

// The golden backup (testdata/backup at the top of the module) is the
// backup of identity "work", comment golden@icn-agent, whose seed is
// SHA-256 of goldenBackupSeed, encrypted to the age key backup.key; its
// public key line is work.pub. It was written by this package; every
// later version must read it. cmd/icn-agent restores it too.
const (
	goldenBackupDir  = "../../testdata/backup/"
	goldenBackupSeed = "icn-agent golden backup seed"
)

func TestGoldenBackup(t *testing.T) {
	seed := sha256.Sum256([]byte(goldenBackupSeed))
	key, err := os.ReadFile(goldenBackupDir + "backup.key")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := ParseIdentities("backup.key", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := goldenBackupDir + "work.age"
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && *updateGolden {
		bk, err := NewBackup("work", "golden@icn-agent", seed[:], time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseRecipient(strings.TrimSpace(string(bytes.SplitN(key, []byte("\n"), 2)[0][len("# public key: "):])))
		if err != nil {
			t.Fatal(err)
		}
		if err := bk.WriteFile(path, r); err != nil {
			t.Fatal(err)
		}
		pub, _ := sealstore.PublicKey(seed[:])
		line := bytes.TrimSpace(ssh.MarshalAuthorizedKey(pub))
		if err := os.WriteFile(goldenBackupDir+"work.pub", append(append(line, " golden@icn-agent"...), '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bk, err := ReadBackupFile(path, &Keys{Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Destroy()
	if bk.Name != "work" || bk.Comment != "golden@icn-agent" || !bytes.Equal(bk.Seed(), seed[:]) {
		t.Fatalf("golden backup reads as %q %q with another seed", bk.Name, bk.Comment)
	}
	want, err := os.ReadFile(goldenBackupDir + "work.pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sealstore.PublicKey(bk.Seed())
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(pub))) + " golden@icn-agent\n"; got != string(want) {
		t.Fatalf("public key %q, want %q", got, want)
	}
}
