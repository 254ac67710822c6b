package pcrwatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// wait bounds every wait for something the watcher should do promptly.
const wait = 5 * time.Second

// fakeReader is a Reader over an in-memory PCR bank. Every read is
// announced on reads before it returns (dropped if the buffer is full).
type fakeReader struct {
	mu     sync.Mutex
	values map[int][]byte
	err    error // returned instead of values while set
	calls  [][]int
	reads  chan []int
}

func newFakeReader() *fakeReader {
	return &fakeReader{values: make(map[int][]byte), reads: make(chan []int, 1000)}
}

// value returns the 32-byte PCR value labelled label.
func value(label string) []byte {
	v := sha256.Sum256([]byte(label))
	return v[:]
}

func (f *fakeReader) set(pcr int, label string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.values[pcr] = value(label)
}

func (f *fakeReader) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeReader) ReadPCRs(ctx context.Context, bank tpm2.TPMIAlgHash, indexes []int) ([][]byte, error) {
	f.mu.Lock()
	defer func() {
		f.mu.Unlock()
		select {
		case f.reads <- slices.Clone(indexes):
		default: // nobody is counting reads
		}
	}()
	f.calls = append(f.calls, slices.Clone(indexes))
	if bank != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("fake: bank %v", bank)
	}
	if f.err != nil {
		return nil, f.err
	}
	out := make([][]byte, len(indexes))
	for i, p := range indexes {
		v, ok := f.values[p]
		if !ok {
			v = make([]byte, 32) // PCRs start at zero
		}
		out[i] = bytes.Clone(v)
	}
	return out, nil
}

// logRecorder is a slog.Handler keeping every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// count returns the number of records at level whose message contains msg
// and whose attributes include every key=value of attrs (values formatted
// with %v).
func (h *logRecorder) count(level slog.Level, msg string, attrs ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level != level || !strings.Contains(r.Message, msg) {
			continue
		}
		got := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			got[a.Key] = a.Value.String()
			return true
		})
		ok := true
		for _, kv := range attrs {
			k, v, _ := strings.Cut(kv, "=")
			if !strings.Contains(got[k], v) {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// start runs w until the test ends and checks that Run then returns nil and
// closes the channel.
func start(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(wait):
			t.Errorf("Run did not return %v after cancel", wait)
		}
	})
}

// awaitRead waits for the fake reader's next read and returns the PCRs it
// was asked for.
func awaitRead(t *testing.T, f *fakeReader) []int {
	t.Helper()
	select {
	case pcrs := <-f.reads:
		return pcrs
	case <-time.After(wait):
		t.Fatalf("no PCR read within %v", wait)
		return nil
	}
}

// poll pokes w and waits until the poll has read the PCRs.
func poll(t *testing.T, w *Watcher, f *fakeReader) {
	t.Helper()
	w.Poke()
	awaitRead(t, f)
}

// nextBatch waits for the next batch of changes.
func nextBatch(t *testing.T, w *Watcher) []Change {
	t.Helper()
	select {
	case b, ok := <-w.Changes():
		if !ok {
			t.Fatal("Changes closed")
		}
		return b
	case <-time.After(wait):
		t.Fatalf("no change reported within %v", wait)
		return nil
	}
}

// want is a change written with value labels.
type want struct {
	pcr      int
	old, new string
}

func checkBatch(t *testing.T, got []Change, wants ...want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("batch has %d changes, want %d: %+v", len(got), len(wants), got)
	}
	for i, w := range wants {
		if got[i].PCR != w.pcr || !bytes.Equal(got[i].Old, value(w.old)) || !bytes.Equal(got[i].New, value(w.new)) {
			t.Errorf("change %d = PCR %d %x -> %x, want PCR %d %q -> %q", i, got[i].PCR, got[i].Old, got[i].New, w.pcr, w.old, w.new)
		}
	}
}

// setup returns a running watcher over a fake bank with PCRs 0, 7 and 16
// at values "a0", "a7", "a16", whose baseline has been read.
func setup(t *testing.T) (*Watcher, *fakeReader, *logRecorder) {
	t.Helper()
	f := newFakeReader()
	for _, p := range []int{0, 7, 16} {
		f.set(p, fmt.Sprintf("a%d", p))
	}
	logs := &logRecorder{}
	w := New(f, time.Hour, slog.New(logs))
	w.SetPCRs([]int{16, 0, 7, 7})
	start(t, w)
	// Run polls at once, then for the Poke SetPCRs made.
	for range 2 {
		if got := awaitRead(t, f); !slices.Equal(got, []int{0, 7, 16}) {
			t.Fatalf("read PCRs %v, want [0 7 16]", got)
		}
	}
	return w, f, logs
}

func TestChanges(t *testing.T) {
	tests := []struct {
		name string
		// steps are applied to the bank, each followed by a poll.
		steps []map[int]string
		want  []want
	}{
		{
			name:  "one PCR changes",
			steps: []map[int]string{{16: "b16"}},
			want:  []want{{16, "a16", "b16"}},
		},
		{
			name:  "two PCRs change in one poll",
			steps: []map[int]string{{0: "b0", 16: "b16"}},
			want:  []want{{0, "a0", "b0"}, {16, "a16", "b16"}},
		},
		{
			name:  "unchanged polls report nothing",
			steps: []map[int]string{{}, {}, {}, {7: "b7"}},
			want:  []want{{7, "a7", "b7"}},
		},
		{
			name:  "same value twice reports once",
			steps: []map[int]string{{7: "b7"}, {7: "b7"}},
			want:  []want{{7, "a7", "b7"}},
		},
		{
			name:  "unreceived changes merge",
			steps: []map[int]string{{7: "b7"}, {7: "c7", 0: "b0"}},
			want:  []want{{0, "a0", "b0"}, {7, "a7", "c7"}},
		},
		{
			name:  "a change undone before it is received is dropped",
			steps: []map[int]string{{7: "b7"}, {7: "a7", 16: "b16"}},
			want:  []want{{16, "a16", "b16"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, f, _ := setup(t)
			for _, step := range tt.steps {
				for p, label := range step {
					f.set(p, label)
				}
				poll(t, w, f)
			}
			// Polls are sequential: once a further read has started,
			// every earlier poll's changes are pending, so the first
			// batch received holds them all.
			poll(t, w, f)
			checkBatch(t, nextBatch(t, w), tt.want...)

			cur := w.Current()
			for _, c := range tt.want {
				if !bytes.Equal(cur[c.pcr], value(c.new)) {
					t.Errorf("Current()[%d] = %x, want %q", c.pcr, cur[c.pcr], c.new)
				}
			}
		})
	}
}

func TestBaselineIsNotAChange(t *testing.T) {
	w, f, _ := setup(t)
	cur := w.Current()
	if len(cur) != 3 {
		t.Fatalf("Current() after the first poll = %x, want PCRs 0, 7, 16", cur)
	}
	for _, p := range []int{0, 7, 16} {
		if !bytes.Equal(cur[p], value(fmt.Sprintf("a%d", p))) {
			t.Errorf("Current()[%d] = %x", p, cur[p])
		}
	}
	// Current returns copies.
	cur[0][0] ^= 0xff
	if !bytes.Equal(w.Current()[0], value("a0")) {
		t.Error("modifying Current's result changed the watcher's state")
	}
	f.set(0, "b0")
	poll(t, w, f)
	checkBatch(t, nextBatch(t, w), want{0, "a0", "b0"})
}

func TestReadErrorsLoggedOnceAndRecovered(t *testing.T) {
	w, f, logs := setup(t)
	errDown := errors.New("TPM unavailable")
	f.setErr(errDown)
	for range 4 {
		poll(t, w, f)
	}
	f.setErr(errors.New("another failure"))
	for range 2 {
		poll(t, w, f)
	}
	f.setErr(nil)
	f.set(16, "b16")
	poll(t, w, f)
	checkBatch(t, nextBatch(t, w), want{16, "a16", "b16"})

	if n := logs.count(slog.LevelWarn, "cannot read PCRs", "err=TPM unavailable"); n != 1 {
		t.Errorf("first error logged %d times, want 1", n)
	}
	if n := logs.count(slog.LevelWarn, "cannot read PCRs", "err=another failure"); n != 1 {
		t.Errorf("second error logged %d times, want 1", n)
	}
	if n := logs.count(slog.LevelInfo, "works again"); n != 1 {
		t.Errorf("recovery logged %d times, want 1", n)
	}
	if n := logs.count(slog.LevelWarn, "PCR changed", "pcr=16"); n != 1 {
		t.Errorf("change of PCR 16 logged %d times, want 1", n)
	}
}

func TestSetPCRsWhileRunning(t *testing.T) {
	w, f, _ := setup(t)

	// Add 23 (at a non-zero value) and drop 0: the poll SetPCRs
	// triggers takes 23's baseline.
	f.set(23, "a23")
	w.SetPCRs([]int{7, 16, 23})
	if got := awaitRead(t, f); !slices.Equal(got, []int{7, 16, 23}) {
		t.Fatalf("read PCRs %v after SetPCRs, want [7 16 23]", got)
	}
	cur := w.Current()
	if _, ok := cur[0]; ok {
		t.Error("Current() still lists PCR 0 after it was dropped")
	}
	if !bytes.Equal(cur[23], value("a23")) {
		t.Errorf("Current()[23] = %x, want the baseline", cur[23])
	}

	// A dropped PCR is not reported; an added one is.
	f.set(0, "b0")
	f.set(23, "b23")
	poll(t, w, f)
	checkBatch(t, nextBatch(t, w), want{23, "a23", "b23"})

	// Re-adding a PCR takes a fresh baseline: 0 moved while unwatched,
	// which is not a change.
	w.SetPCRs([]int{0, 23, 99, -1})
	awaitRead(t, f)
	f.set(0, "c0")
	poll(t, w, f)
	checkBatch(t, nextBatch(t, w), want{0, "b0", "c0"})
}

func TestNoPCRsNoReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeReader()
		w := New(f, 10*time.Millisecond, slog.New(&logRecorder{}))
		start(t, w)
		noReads := func(after string) {
			t.Helper()
			// Run is idle in its select once Wait returns: whatever
			// the start, the Poke or the ticks made it do is done.
			synctest.Wait()
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.calls) != 0 {
				t.Errorf("watcher with no PCRs read the TPM %s: %v", after, f.calls)
			}
		}
		noReads("on start")
		w.Poke()
		noReads("when poked")
		// Ten intervals of the bubble's clock: ten ticks.
		time.Sleep(100 * time.Millisecond)
		noReads("on its ticks")
	})
}

func TestPokePollsAtOnce(t *testing.T) {
	w, f, _ := setup(t) // interval: one hour
	for range 3 {
		begin := time.Now()
		w.Poke()
		awaitRead(t, f)
		if d := time.Since(begin); d > 2*time.Second {
			t.Errorf("Poke took %v to poll", d)
		}
	}
}

func TestIntervalPolls(t *testing.T) {
	f := newFakeReader()
	f.set(4, "a4")
	w := New(f, 20*time.Millisecond, slog.New(&logRecorder{}))
	w.SetPCRs([]int{4})
	start(t, w)
	for range 5 { // the first poll, the one SetPCRs asked for, then ticks
		awaitRead(t, f)
	}
	f.set(4, "b4")
	checkBatch(t, nextBatch(t, w), want{4, "a4", "b4"})
}

func TestCancelClosesChannel(t *testing.T) {
	f := newFakeReader()
	f.set(16, "a16")
	w := New(f, time.Hour, slog.New(&logRecorder{}))
	w.SetPCRs([]int{16})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	awaitRead(t, f)
	awaitRead(t, f)
	// A change pending delivery does not keep Run from returning.
	f.set(16, "b16")
	poll(t, w, f)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatalf("Run did not return within %v of cancel", wait)
	}
	for range w.Changes() {
		// A batch may have been sent just before the cancel; the
		// channel must then be closed.
	}
	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestNewDefaults(t *testing.T) {
	w := New(newFakeReader(), 0, nil)
	if w.interval != DefaultInterval || w.log == nil {
		t.Errorf("New(r, 0, nil): interval %v, log %v", w.interval, w.log)
	}
}
