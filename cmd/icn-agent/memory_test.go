package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/internal/memscan"
	"github.com/icn/icn-agent/internal/swtpmtest"
)

// goTPMCopies is how many copies of an unsealed seed go-tpm leaves behind
// in unreachable heap memory for each TPM2_Unseal, none of which icn-agent
// can reach to wipe (see docs/security.md, "Memory hygiene: what the test
// found"): the decrypted response parameter area (a TPM2B, so preceded by
// its size 0x0020), the sized-field buffer unmarshalling reads it into,
// and encoding/binary.Read's scratch copy. They last until the garbage
// collector hands the memory out again.
const goTPMCopies = 3

// goTPMRemnants bounds what is found of those copies in anonymous memory:
// whole copies, and halves of copies the garbage collector has partly
// handed out again (seen now and then on a loaded machine). It allows for
// the copies of more than one unseal in the agent's lifetime.
const goTPMRemnants = 2 * goTPMCopies

// goStackRemnants bounds the pieces of the expanded key (SHA-512 of the
// seed) found in anonymous memory. Signing derives it on the goroutine's
// stack and overwrites that stack afterwards, but the runtime may move a
// goroutine's stack at any preemption point (to grow or shrink it), and
// the old copy is freed as it was. Seen rarely, one piece at a time.
const goStackRemnants = 2

// TestMemoryHygiene runs the real agent (icn-agent serve, built with go
// build) with an identity whose seed the test knows, signs, makes the
// agent forget the seed, and then reads the agent's memory through
// /proc/PID/mem looking for the seed and for the expanded Ed25519 key
// (the two halves of SHA-512(seed), plain and clamped, in byte order
// and as SHA-512 state words).
//
// While the seed is cached, the scan must find it in its locked buffer:
// the positive control, without which a broken scanner would pass. After
// lock (agent.Lock), expiry (auto_lock_timeout_secs = 1), removal
// (agent.Remove, ssh-add -d) and DropAll (SIGUSR1, which runs the same
// code as shutdown: Serve returning, then Server.Close, call DropAll
// before the process exits):
//
//   - no trace of the expanded key outside anonymous memory, and at most
//     goStackRemnants pieces in it (stacks the runtime moved);
//   - the cached seed's buffer is gone;
//   - no copy of the seed, or of either half of it, outside anonymous
//     memory, except the in-process simulator's own RAM (its object
//     slots) for --tpm sim;
//   - at most goTPMCopies whole copies, and goTPMRemnants whole or half
//     copies, in anonymous memory: go-tpm's garbage.
//
// It runs once with --tpm sim and once with swtpm, a TPM in another
// process, where the agent's memory holds only what crossed the bus.
// Reading another process's memory needs root (CI runs as root).
func TestMemoryHygiene(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading the agent's memory through /proc/PID/mem needs root; CI runs as root")
	}
	type trigger struct {
		name     string
		autoLock int // auto_lock_timeout_secs; 0 keeps the seed until told
		forget   func(t *testing.T, p *agentProc, ag agent.ExtendedAgent, pub ssh.PublicKey)
	}
	waitDropped := func(t *testing.T, p *agentProc) {
		waitUntil(t, "the seed to be dropped", func() bool {
			st := p.status(t)
			return len(st.Identities) == 1 && !st.Identities[0].Unsealed
		})
	}
	triggers := []trigger{
		{"lock", 0, func(t *testing.T, p *agentProc, ag agent.ExtendedAgent, _ ssh.PublicKey) {
			if err := ag.Lock([]byte("memory test")); err != nil {
				t.Fatal(err)
			}
		}},
		{"expiry", 1, func(t *testing.T, p *agentProc, _ agent.ExtendedAgent, _ ssh.PublicKey) {
			waitDropped(t, p)
		}},
		{"removal", 0, func(t *testing.T, p *agentProc, ag agent.ExtendedAgent, pub ssh.PublicKey) {
			if err := ag.Remove(pub); err != nil {
				t.Fatal(err)
			}
			waitDropped(t, p)
		}},
		{"drop-all", 0, func(t *testing.T, p *agentProc, _ agent.ExtendedAgent, _ ssh.PublicKey) {
			p.signal(t, syscall.SIGUSR1)
			waitDropped(t, p)
		}},
	}
	for _, backend := range []string{"sim", "swtpm"} {
		for _, tr := range triggers {
			t.Run(backend+"/"+tr.name, func(t *testing.T) {
				spec := "sim"
				if backend == "swtpm" {
					spec = swtpmtest.Start(t).Spec()
				}
				d := newDaemonEnv(t, spec)
				d.writeConfig(t, tr.autoLock)
				seed, pub := d.importKey(t, "mem")
				p := d.serve(t, 1)
				ag := p.client(t).Agent()
				data := []byte("memory hygiene")
				sig, err := ag.Sign(pub, data)
				if err != nil {
					t.Fatal(err)
				}
				if err := pub.Verify(data, sig); err != nil {
					t.Fatal(err)
				}
				patterns := memscan.Ed25519Patterns(seed)

				// Positive control: the cached seed is in its locked
				// buffer, a one-page mapping of its own.
				before, st, err := memscan.Scan(p.pid(), patterns)
				if err != nil {
					t.Fatal(err)
				}
				var cached []uint64
				for _, h := range before {
					if h.Pattern == "seed" && h.Mapping.Path == "" && h.Mapping.End-h.Mapping.Start == uint64(os.Getpagesize()) {
						cached = append(cached, h.Addr)
					}
				}
				if len(cached) != 1 {
					t.Fatalf("positive control: the cached seed was not found in a locked page (scanned %d mappings, %d bytes; hits %v)", st.Mappings, st.Bytes, before)
				}

				tr.forget(t, p, ag, pub)

				after, st, err := memscan.Scan(p.pid(), patterns)
				if err != nil {
					t.Fatal(err)
				}
				if st.Bytes < 1<<20 {
					t.Fatalf("scanned only %d bytes", st.Bytes)
				}
				f := classify(after, cached[0], backend == "sim")
				t.Logf("%s/%s: scanned %d mappings, %d MiB; %s", backend, tr.name, st.Mappings, st.Bytes>>20, f)
				for _, e := range f.errs {
					t.Error(e)
				}
				if f.anon > goTPMCopies {
					t.Errorf("%d copies of the seed in anonymous memory after the drop; go-tpm accounts for at most %d", f.anon, goTPMCopies)
				}
				if f.expanded > goStackRemnants {
					t.Errorf("%d pieces of the expanded key in anonymous memory after the drop; moved stacks account for at most %d", f.expanded, goStackRemnants)
				}
				if f.anon+f.halves > goTPMRemnants {
					t.Errorf("%d whole and %d half copies of the seed in anonymous memory after the drop; go-tpm's garbage accounts for at most %d", f.anon, f.halves, goTPMRemnants)
				}
			})
		}
	}
}

// findings sorts what a scan found after the seed was dropped.
type findings struct {
	anon      int      // whole seeds in anonymous memory (go-tpm's garbage)
	halves    int      // halves of seeds in anonymous memory (the same, partly reused)
	expanded  int      // pieces of the expanded key in anonymous memory (moved stacks)
	framed    int      // of which preceded by a TPM2B size (0x0020)
	simulator []string // symbols of the in-process simulator holding the seed
	errs      []string // what must not be there
}

func (f findings) String() string {
	s := fmt.Sprintf("%d seed copies in anonymous memory (%d TPM2B-framed), %d halves, %d pieces of the expanded key", f.anon, f.framed, f.halves, f.expanded)
	if len(f.simulator) > 0 {
		s += fmt.Sprintf(", %d in the in-process simulator's RAM (%s)", len(f.simulator), strings.Join(f.simulator, ", "))
	}
	return s
}

// classify sorts hits: see TestMemoryHygiene for what is allowed.
// cachedAddr is where the cached seed was.
func classify(hits []memscan.Hit, cachedAddr uint64, sim bool) findings {
	var f findings
	whole := map[uint64]bool{}
	for _, h := range hits {
		if h.Pattern == "seed" {
			whole[h.Addr] = true
		}
	}
	for _, h := range hits {
		switch h.Pattern {
		case "seed":
		case "seed[:16]", "seed[16:]":
			start := h.Addr
			if h.Pattern == "seed[16:]" {
				start -= 16
			}
			switch {
			case whole[start]:
			case h.Symbol == "" && h.Mapping.Path == "" && h.Addr != cachedAddr && h.Addr != cachedAddr+16:
				f.halves++
			default:
				f.errs = append(f.errs, fmt.Sprintf("half a seed left: %v", h))
			}
			continue
		default:
			if h.Symbol == "" && h.Mapping.Path == "" && (h.Addr < cachedAddr || h.Addr >= cachedAddr+uint64(os.Getpagesize())) {
				f.expanded++
			} else {
				f.errs = append(f.errs, fmt.Sprintf("expanded key left: %v", h))
			}
			continue
		}
		switch {
		case h.Addr == cachedAddr:
			f.errs = append(f.errs, fmt.Sprintf("the cached seed was not wiped: %v", h))
		case h.Symbol != "" && sim && !strings.Contains(h.Symbol, "."):
			// A C global: the reference simulator keeps loaded objects
			// in static slots and does not clear them on flush.
			f.simulator = append(f.simulator, h.Symbol)
		case h.Symbol != "" || h.Mapping.Path != "":
			f.errs = append(f.errs, fmt.Sprintf("seed left in %v", h))
		default:
			f.anon++
			if bytes.HasSuffix(h.Before, []byte{0x00, 0x20}) {
				f.framed++
			}
		}
	}
	return f
}
