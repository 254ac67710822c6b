package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv/client"
	"github.com/icn/icn-agent/internal/memscan"
	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// memoryCycles is how many times TestMemoryHygiene has the agent unseal an
// identity and drop it again: copies that pile up per unseal, as go-tpm's
// used to, cannot hide below a threshold.
const memoryCycles = 50

// TestMemoryHygiene runs the real agent (icn-agent serve, built with go
// build) on a swtpm, a TPM in another process, so that the agent's memory
// holds only what crossed the bus. It has the agent handle every kind of
// secret it handles, forget each one in every way it can, and then reads
// the agent's writable memory through /proc/PID/mem (internal/memscan)
// and requires that no copy of any of them is left:
//
//   - the seeds of two sealed identities, one plain and one with a PIN,
//     each unsealed and dropped many times (memoryCycles in all), by lock,
//     expiry, removal (ssh-add -d), SIGUSR1 (DropAll, the code shutdown
//     runs), remove-all (ssh-add -D), signing with them each time; for
//     each seed: the seed, either half of it, both halves of SHA-512 of
//     it (the scalar as hashed and clamped, the nonce prefix), in byte
//     order and as SHA-512 state words (memscan.Ed25519Patterns);
//   - the lock passphrase, and each wrong guess at it (a failed unlock);
//   - the PIN, given through SSH_ASKPASS, and its authValue; a wrong PIN
//     (a failed unseal) and its authValue;
//   - the seeds of software Ed25519 keys added over the agent protocol:
//     two removed (ssh-add -d, ssh-add -D) and one expired (ssh-add -t).
//
// Positive controls keep a broken scanner from passing: while the plain
// identity's seed is cached, the scan must find it in its locked buffer; and
// while a software key is held, the scan must find the marker it carries
// as its comment, an arbitrary string in ordinary heap memory, as the
// passphrases and PINs would be.
//
// The figures are logged per kind; every kind must be at zero. Reading
// another process's memory needs root (CI runs as root).
func TestMemoryHygiene(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading the agent's memory through /proc/PID/mem needs root; CI runs as root")
	}
	start := time.Now()
	sw := swtpmtest.Start(t)
	d := newDaemonEnv(t, sw.Spec())
	d.writeConfig(t, 0)

	pin := randomText(t, "pin-")
	wrongPIN := randomText(t, "wrong-pin-")
	pinFile := filepath.Join(d.dir, "pin")
	writeSecretFile(t, pinFile, pin)
	memSeed, memPub := d.importKey(t, "mem")
	pinSeed, pinPub := d.importKeyArgs(t, "pin", "--pin", "--pin-file", pinFile)
	d.env = append(d.env, "SSH_ASKPASS="+d.askpassScript(t, pinFile))

	p := d.serve(t, 2)
	c := p.client(t)
	ag := c.Agent()
	m := &memoryRun{t: t, p: p, c: c, ag: ag}

	// Positive control 1: the cached seed is in its locked buffer.
	m.unseal("mem", 0)
	m.sign(memPub)
	m.controlCachedSeed(memSeed)

	// Positive control 2: a marker in ordinary memory, the comment of a
	// software key, is found while the key is held.
	marker := randomText(t, "marker-")
	softRemoved := m.addSoftKey(string(marker), 0)
	m.controlMarker(marker)
	m.removeSoftKey(softRemoved)
	softRemovedAll := m.addSoftKey("removed by remove-all", 0)
	m.waitSoftKeys(1)

	passphrase := randomText(t, "lock-passphrase-")
	var guesses [][]byte
	drops := []struct {
		name string
		drop func(names ...string)
	}{
		{"SIGUSR1", func(...string) { p.signal(t, syscall.SIGUSR1) }},
		{"lock", func(...string) {
			if err := ag.Lock(passphrase); err != nil {
				t.Fatal(err)
			}
			m.waitDropped("mem", "pin")
			guess := randomText(t, "wrong-guess-")
			guesses = append(guesses, guess)
			if err := ag.Unlock(guess); err == nil {
				t.Fatal("the agent unlocked with a wrong passphrase")
			}
			if err := ag.Unlock(passphrase); err != nil {
				t.Fatal(err)
			}
		}},
		{"removal", func(names ...string) {
			for _, name := range names {
				if err := ag.Remove(map[string]ssh.PublicKey{"mem": memPub, "pin": pinPub}[name]); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"remove-all", func(...string) {
			if err := ag.RemoveAll(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	counts := map[string]int{}
	for i := range memoryCycles {
		names := []string{"mem"}
		if i%3 == 0 {
			// Every third cycle, the PIN identity too, dropped every
			// way in turn. The agent asks SSH_ASKPASS for its PIN.
			names = append(names, "pin")
		}
		if i%10 == 9 {
			// Expiry: the seeds are dropped a second after the unseal.
			for _, name := range names {
				m.unseal(name, time.Second)
			}
			m.sign(memPub)
			if slices.Contains(names, "pin") {
				m.sign(pinPub)
			}
			m.waitDropped(names...)
			counts["expiry"]++
			continue
		}
		dr := drops[i%len(drops)]
		for _, name := range names {
			m.unseal(name, 0)
		}
		m.sign(memPub)
		if slices.Contains(names, "pin") {
			m.sign(pinPub)
		}
		dr.drop(names...)
		m.waitDropped(names...)
		counts[dr.name]++
		if i == 20 {
			// A failed unseal: the wrong PIN. The TPM counts it.
			writeSecretFile(t, pinFile, wrongPIN)
			if err := c.Add("pin", 0); err == nil {
				t.Fatal("the agent unsealed with a wrong PIN")
			}
			writeSecretFile(t, pinFile, pin)
		}
		if i == 30 {
			// A software key added with a lifetime (ssh-add -t) expires.
			m.expired = m.addSoftKey("expires", 1)
			m.waitSoftKeys(0)
		}
	}
	st := p.status(t)
	var unseals uint64
	for _, is := range st.Identities {
		unseals += is.UnsealCount
		if is.Unsealed {
			t.Fatalf("%s is still unsealed", is.Name)
		}
	}
	if st.Locked || st.SoftwareKeys != 0 {
		t.Fatalf("agent locked %v, %d software keys; want unlocked, none", st.Locked, st.SoftwareKeys)
	}
	t.Logf("unseal requests: %v (the agent unsealed %d times); %d drops: %v; %d wrong unlock guesses, 1 wrong PIN, 3 software keys; in %v",
		m.unseals, unseals, memoryCycles, counts, len(guesses), time.Since(start).Round(time.Millisecond))

	authValue := func(pin []byte) []byte { return tpmseal.PINAuthValue(pin) }
	kinds := []secretKind{
		{"seed of mem (plain identity)", memscan.Ed25519Patterns(memSeed)},
		{"seed of pin (PIN identity)", memscan.Ed25519Patterns(pinSeed)},
		{"lock passphrase", []memscan.Pattern{{Name: "passphrase", Bytes: passphrase}}},
		{"wrong unlock guesses", bytesPatterns("guess", guesses...)},
		{"PIN", bytesPatterns("PIN", pin)},
		{"PIN authValue", bytesPatterns("authValue", authValue(pin))},
		{"wrong PIN", bytesPatterns("wrong PIN", wrongPIN)},
		{"wrong PIN authValue", bytesPatterns("authValue", authValue(wrongPIN))},
		{"software key removed (ssh-add -d)", memscan.Ed25519Patterns(softRemoved.seed)},
		{"software key removed (ssh-add -D)", memscan.Ed25519Patterns(softRemovedAll.seed)},
		{"software key expired (ssh-add -t)", memscan.Ed25519Patterns(m.expired.seed)},
	}
	m.scanKinds(kinds)
}

// secretKind is one kind of secret the agent must forget, and the byte
// patterns that would reveal it.
type secretKind struct {
	name     string
	patterns []memscan.Pattern
}

// memoryRun is TestMemoryHygiene's agent and what it did to it.
type memoryRun struct {
	t       *testing.T
	p       *agentProc
	c       *client.Client
	ag      agent.ExtendedAgent
	expired softKey
	cached  uint64         // where the cached seed was, for the log
	unseals map[string]int // unseal requests that succeeded, by identity
}

// softKey is a software key the test added to the agent.
type softKey struct {
	seed []byte
	pub  ssh.PublicKey
}

// unseal has the agent unseal identity name (the unseal@icn-agent
// extension, as icn-agent add does), keeping it for lifetime (0: until
// dropped).
func (m *memoryRun) unseal(name string, lifetime time.Duration) {
	m.t.Helper()
	if err := m.c.Add(name, lifetime); err != nil {
		m.t.Fatalf("unseal %s: %v", name, err)
	}
	if m.unseals == nil {
		m.unseals = map[string]int{}
	}
	m.unseals[name]++
}

// sign has the agent sign with key, and checks the signature.
func (m *memoryRun) sign(key ssh.PublicKey) {
	m.t.Helper()
	data := []byte("memory hygiene")
	sig, err := m.ag.Sign(key, data)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := key.Verify(data, sig); err != nil {
		m.t.Fatal(err)
	}
}

// waitDropped waits until none of the named identities is unsealed.
func (m *memoryRun) waitDropped(names ...string) {
	m.t.Helper()
	waitUntil(m.t, fmt.Sprintf("%v to be dropped", names), func() bool {
		st := m.p.status(m.t)
		if st.Locked {
			return true // a locked agent reports no identities, and holds no seed
		}
		for _, is := range st.Identities {
			if slices.Contains(names, is.Name) && is.Unsealed {
				return false
			}
		}
		return len(st.Identities) > 0
	})
}

// waitSoftKeys waits until the agent holds n software keys.
func (m *memoryRun) waitSoftKeys(n int) {
	m.t.Helper()
	waitUntil(m.t, fmt.Sprintf("the agent to hold %d software keys", n), func() bool {
		return m.p.status(m.t).SoftwareKeys == n
	})
}

// addSoftKey adds a new Ed25519 key over the agent protocol (ssh-add),
// with comment and a lifetime in seconds (0: none), and signs with it.
func (m *memoryRun) addSoftKey(comment string, lifetimeSecs uint32) softKey {
	m.t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		m.t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if err := m.ag.Add(agent.AddedKey{PrivateKey: priv, Comment: comment, LifetimeSecs: lifetimeSecs}); err != nil {
		m.t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		m.t.Fatal(err)
	}
	m.sign(pub)
	return softKey{seed: seed, pub: pub}
}

// removeSoftKey removes a software key (ssh-add -d).
func (m *memoryRun) removeSoftKey(k softKey) {
	m.t.Helper()
	if err := m.ag.Remove(k.pub); err != nil {
		m.t.Fatal(err)
	}
}

// controlCachedSeed is the first positive control: the cached seed is
// found, once, in locked memory (a secmem buffer: a mapping that is
// mlock'ed and left out of core dumps).
func (m *memoryRun) controlCachedSeed(seed []byte) {
	m.t.Helper()
	hits, st := m.scan(memscan.Ed25519Patterns(seed))
	var cached []memscan.Hit
	for _, h := range hits {
		if h.Pattern == "seed" && h.Mapping.Path == "" && h.Mapping.Locked() {
			cached = append(cached, h)
		}
	}
	if len(cached) != 1 {
		m.t.Fatalf("positive control: the cached seed was not found in a locked page (scanned %d mappings, %d bytes; hits %v)", st.Mappings, st.Bytes, hits)
	}
	m.cached = cached[0].Addr
	m.t.Logf("positive control: the cached seed is at %#x, in a locked mapping (flags %v); %d hits in all while cached", m.cached, cached[0].Mapping.Flags, len(hits))
}

// controlMarker is the second positive control: a string the agent holds
// in ordinary memory is found.
func (m *memoryRun) controlMarker(marker []byte) {
	m.t.Helper()
	hits, st := m.scan(bytesPatterns("marker", marker))
	if len(hits) == 0 {
		m.t.Fatalf("positive control: the comment of a software key the agent holds was not found (scanned %d mappings, %d bytes)", st.Mappings, st.Bytes)
	}
	m.t.Logf("positive control: a held software key's comment found %d times (%v)", len(hits), hits[0])
}

// scan scans the agent's memory for patterns.
func (m *memoryRun) scan(patterns []memscan.Pattern) ([]memscan.Hit, memscan.Stats) {
	m.t.Helper()
	hits, st, err := memscan.Scan(m.p.pid(), patterns)
	if err != nil {
		m.t.Fatal(err)
	}
	if st.Bytes < 1<<20 {
		m.t.Fatalf("scanned only %d bytes", st.Bytes)
	}
	if len(st.Unread) > 0 {
		m.t.Fatalf("could not read %d writable mappings of the agent: %v", len(st.Unread), st.Unread)
	}
	return hits, st
}

// scanKinds scans once for every kind, logs what it found of each, and
// fails for every kind found at all.
func (m *memoryRun) scanKinds(kinds []secretKind) {
	m.t.Helper()
	var all []memscan.Pattern
	kindOf := map[string]string{}
	for _, k := range kinds {
		for _, p := range k.patterns {
			name := k.name + ": " + p.Name
			kindOf[name] = k.name
			all = append(all, memscan.Pattern{Name: name, Bytes: p.Bytes})
		}
	}
	hits, st := m.scan(all)
	byKind := map[string][]memscan.Hit{}
	for _, h := range hits {
		byKind[kindOf[h.Pattern]] = append(byKind[kindOf[h.Pattern]], h)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "scanned %d mappings, %d MiB (%d unmapped during the scan, %d unreadable):\n", st.Mappings, st.Bytes>>20, st.Skipped, len(st.Unread))
	for _, k := range kinds {
		// A whole seed also matches its two halves: say which
		// patterns matched, not just how often.
		perPattern := map[string]int{}
		for _, h := range byKind[k.name] {
			perPattern[strings.TrimPrefix(h.Pattern, k.name+": ")]++
		}
		var detail []string
		for _, p := range k.patterns {
			if n := perPattern[p.Name]; n > 0 {
				detail = append(detail, fmt.Sprintf("%s ×%d", p.Name, n))
			}
		}
		fmt.Fprintf(&table, "  %-36s %d hits %s\n", k.name, len(byKind[k.name]), strings.Join(detail, ", "))
	}
	m.t.Log(table.String())
	for _, k := range kinds {
		hs := byKind[k.name]
		if len(hs) == 0 {
			continue
		}
		var where []string
		for _, h := range hs {
			where = append(where, fmt.Sprintf("%s (before %x, after %x)", h, h.Before, h.After))
		}
		m.t.Errorf("%s: %d hits left after it was dropped:\n\t%s", k.name, len(hs), strings.Join(where, "\n\t"))
	}
}

// bytesPatterns names each secret for memscan.
func bytesPatterns(name string, secrets ...[]byte) []memscan.Pattern {
	var out []memscan.Pattern
	for i, s := range secrets {
		out = append(out, memscan.Pattern{Name: fmt.Sprintf("%s %d", name, i+1), Bytes: s})
	}
	return out
}

// randomText returns prefix followed by 32 random hex digits: a secret of
// the printable kind a user types, long enough that memscan never matches
// it by chance.
func randomText(t *testing.T, prefix string) []byte {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return []byte(prefix + hex.EncodeToString(b))
}

// writeSecretFile writes secret and a newline to path, mode 0600.
func writeSecretFile(t *testing.T, path string, secret []byte) {
	t.Helper()
	if err := os.WriteFile(path, append(slices.Clone(secret), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
}

// askpassScript writes an SSH_ASKPASS program that prints the first line
// of pinFile, as a user typing the PIN would give it.
func (d *daemonEnv) askpassScript(t *testing.T, pinFile string) string {
	t.Helper()
	path := filepath.Join(d.dir, "askpass")
	script := fmt.Sprintf("#!/bin/sh\nexec head -n 1 %q\n", pinFile)
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}
