package pcrwatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/internal/tpmdev"
)

// The simulator is one instance per process: these tests do not run in
// parallel.

// extended returns the value of a SHA-256 PCR holding old after an extend
// with digest: SHA-256(old || digest).
func extended(old, digest []byte) []byte {
	h := sha256.New()
	h.Write(old)
	h.Write(digest)
	return h.Sum(nil)
}

// readEvents is a Reader announcing each read of the Reader it wraps: on
// started as the read begins, on done once it has returned (either is
// dropped if its buffer is full).
type readEvents struct {
	r             Reader
	started, done chan struct{}
}

func newReadEvents(r Reader) *readEvents {
	return &readEvents{r: r, started: make(chan struct{}, 1000), done: make(chan struct{}, 1000)}
}

func (e *readEvents) ReadPCRs(ctx context.Context, bank tpm2.TPMIAlgHash, indexes []int) ([][]byte, error) {
	select {
	case e.started <- struct{}{}:
	default:
	}
	defer func() {
		select {
		case e.done <- struct{}{}:
		default:
		}
	}()
	return e.r.ReadPCRs(ctx, bank, indexes)
}

// await waits for the next event on ch.
func (e *readEvents) await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("no PCR read %s within %v", what, wait)
	}
}

// waitBaseline waits until w, reading through ev, has read every PCR of
// pcrs once. Polls are sequential: when a read starts, every earlier poll
// has recorded its values, so Current is checked at each read's start.
func waitBaseline(t *testing.T, w *Watcher, ev *readEvents, pcrs ...int) map[int][]byte {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case <-ev.started:
		case <-deadline:
			t.Fatalf("no baseline for PCRs %v within %v (have %x)", pcrs, wait, w.Current())
		}
		cur := w.Current()
		ok := true
		for _, p := range pcrs {
			if _, seen := cur[p]; !seen {
				ok = false
			}
		}
		if ok {
			return cur
		}
	}
}

// checkTPMChange checks that batch is exactly one change of PCR 16 from
// old to want, and that Current agrees.
func checkTPMChange(t *testing.T, w *Watcher, batch []Change, old, want []byte) {
	t.Helper()
	if len(batch) != 1 || batch[0].PCR != 16 {
		t.Fatalf("batch = %+v, want one change of PCR 16", batch)
	}
	if !bytes.Equal(batch[0].Old, old) || !bytes.Equal(batch[0].New, want) {
		t.Errorf("PCR 16: %x -> %x, want %x -> %x", batch[0].Old, batch[0].New, old, want)
	}
	if got := w.Current()[16]; !bytes.Equal(got, want) {
		t.Errorf("Current()[16] = %x, want %x", got, want)
	}
}

// pcrReads counts the TPM2_PCR_Read commands sent through it.
type pcrReads struct {
	next transport.TPM
	n    atomic.Int64
}

func (c *pcrReads) Send(cmd []byte) ([]byte, error) {
	if tpmdev.CommandCode(cmd) == tpm2.TPMCCPCRRead {
		c.n.Add(1)
	}
	return c.next.Send(cmd)
}

func TestSimulator(t *testing.T) {
	ctx := context.Background()
	reads := &pcrReads{}
	opts := tpmdev.Options{
		StateDir: t.TempDir(),
		Wrap: func(next transport.TPM) transport.TPM {
			reads.next = next
			return reads
		},
	}
	tpm, err := tpmdev.Open(ctx, tpmdev.Spec{Kind: tpmdev.KindSim}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })

	ev := newReadEvents(TPMReader(tpm))
	w := New(ev, time.Hour, slog.New(&logRecorder{}))
	// Every PCR, three TPM2_PCR_Read commands per poll (a TPM returns at
	// most eight PCRs per command).
	all := make([]int, tpmdev.NumPCRs)
	for i := range all {
		all[i] = i
	}
	w.SetPCRs(all)
	start(t, w)
	// Run polls at once and again for the Poke SetPCRs made; the
	// interval is an hour, so no other poll happens. Once the second
	// poll's read has returned, the TPM is left alone until the Poke
	// below.
	ev.await(t, ev.done, "to return")
	ev.await(t, ev.done, "to return")
	if n := reads.n.Load(); n != 2*3 {
		t.Fatalf("two polls of 24 PCRs sent %d TPM2_PCR_Read commands, want 6", n)
	}
	base := waitBaseline(t, w, ev, all...)

	data := []byte("a new boot component")
	err = tpm.Run(ctx, func(tp transport.TPM) error { return tpmdev.ExtendPCR(tp, 16, data) })
	if err != nil {
		t.Fatal(err)
	}
	reads.n.Store(0)
	w.Poke()
	digest := sha256.Sum256(data)
	checkTPMChange(t, w, nextBatch(t, w), base[16], extended(base[16], digest[:]))
	if n := reads.n.Load(); n != 3 {
		t.Errorf("one poll of 24 PCRs sent %d TPM2_PCR_Read commands, want 3", n)
	}
}

// TestSwtpmExtendedByAnotherProcess changes PCR 16 with tpm2-tools, the way
// a boot component or an administrator would, while the watcher holds its
// own connection to the same swtpm.
func TestSwtpmExtendedByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	sw := swtpmtest.Start(t)
	spec, err := tpmdev.ParseSpec(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	tpm, err := tpmdev.Open(ctx, spec, tpmdev.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })

	// A short interval: the watcher polls on its own while tpm2-tools
	// talks to the same swtpm (tpmdev connects per command, so they take
	// turns).
	ev := newReadEvents(TPMReader(tpm))
	w := New(ev, 50*time.Millisecond, slog.New(&logRecorder{}))
	w.SetPCRs([]int{7, 16})
	start(t, w)
	base := waitBaseline(t, w, ev, 7, 16)

	digest := sha256.Sum256([]byte("measured by another process"))
	cmd := exec.Command("tpm2_pcrextend", "16:sha256="+hex.EncodeToString(digest[:]))
	cmd.Env = append(os.Environ(), sw.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrextend: %v\n%s", err, out)
	}
	checkTPMChange(t, w, nextBatch(t, w), base[16], extended(base[16], digest[:]))
}
