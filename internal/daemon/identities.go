package daemon

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/pcrwatch"
	"github.com/icn/icn-agent/sealstore"
)

// maxCertFile bounds what is read of a certificate file; an OpenSSH
// certificate is a few kilobytes.
const maxCertFile = 64 << 10

// setIdentities serves the identities of a store snapshot, with their
// certificates and configured settings, and watches their PCRs.
func (a *Agent) setIdentities(snap sealstore.Snapshot) {
	var ids []agentsrv.Identity
	pcrSet := map[int]bool{}
	for _, en := range snap.Entries {
		if en.Err != nil {
			continue // the watcher logged it; the others keep working
		}
		id := agentsrv.Identity{Blob: en.Blob, Cert: a.certificate(en.Blob)}
		if ic, ok := a.cfg.Identities[en.Blob.Name]; ok {
			id.Confirm, id.Notify = ic.Confirm, ic.Notify
			if !a.restrict(&id, ic.Destinations) {
				continue
			}
		}
		ids = append(ids, id)
		for _, p := range en.Blob.Policy.Indexes() {
			pcrSet[p] = true
		}
	}
	if err := a.srv.SetIdentities(ids); err != nil {
		a.log.Warn("some identities were not loaded", "err", err)
	}
	pcrs := make([]int, 0, len(pcrSet))
	for p := range pcrSet {
		pcrs = append(pcrs, p)
	}
	slices.Sort(pcrs)
	a.pcrs.SetPCRs(pcrs)
	if len(snap.Changed) > 0 {
		a.log.Debug("store changed", "changed", snap.Changed)
	}
}

// certificate returns the OpenSSH certificate in NAME-cert.pub beside the
// blob, if there is one for the blob's key. It runs on the main loop, so
// it reads with safefile: a FIFO in its place (which would block the read,
// and with it signals and reloads) or a device is logged and skipped.
func (a *Agent) certificate(b *sealstore.Blob) *ssh.Certificate {
	path := filepath.Join(a.store.Dir(), b.Name+"-cert.pub")
	data, err := safefile.Read(path, maxCertFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		a.log.Warn("cannot read certificate", "path", path, "err", err)
		return nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	cert, ok := k.(*ssh.Certificate)
	if err != nil || !ok {
		a.log.Warn("not an OpenSSH certificate; ignored", "path", path)
		return nil
	}
	if !bytes.Equal(cert.Key.Marshal(), b.PublicKey.Marshal()) {
		a.log.Warn("certificate is for another key; ignored", "path", path, "name", b.Name)
		return nil
	}
	return cert
}

// KnownHostsFiles are the user's known_hosts files, where destinations
// find their host keys: ~/.ssh/known_hosts and known_hosts2, with getenv
// reading HOME. Without HOME there are none.
func KnownHostsFiles(getenv func(string) string) []string {
	home := getenv("HOME")
	if home == "" {
		return nil
	}
	return []string{filepath.Join(home, ".ssh", "known_hosts"), filepath.Join(home, ".ssh", "known_hosts2")}
}

// restrict sets an identity's configured destinations, with their host
// keys from known_hosts. An identity whose destinations cannot all be
// resolved is not served (false): serving it unrestricted would ignore
// the setting.
func (a *Agent) restrict(id *agentsrv.Identity, specs []string) bool {
	if len(specs) == 0 {
		return true
	}
	dcs, err := agentsrv.ParseDestinations(specs, KnownHostsFiles(a.getenv)...)
	if err != nil {
		a.log.Warn("identity not served: its destinations cannot be resolved", "name", id.Blob.Name, "err", err)
		return false
	}
	id.Destinations = dcs
	return true
}

// pcrChanged passes PCR changes to the server, which drops the seeds of
// the identities bound to them and reports which no longer match.
func (a *Agent) pcrChanged(changes []pcrwatch.Change) {
	changed := make([]int, 0, len(changes))
	for _, c := range changes {
		changed = append(changed, c.PCR)
	}
	a.srv.UpdatePCRs(a.pcrs.Current(), changed)
}
