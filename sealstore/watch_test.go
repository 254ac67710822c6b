package sealstore

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"
)

const (
	// watchWait bounds every wait for something the watcher must do.
	watchWait = 5 * time.Second
	// watchPrompt is how soon a change must be reported when file system
	// events work (the requirement is 1 s; the bound leaves room for a
	// loaded machine).
	watchPrompt = 2 * time.Second
)

// watchLogs is a slog.Handler keeping every record.
type watchLogs struct {
	mu      sync.Mutex
	recs    []slog.Record
	handled chan struct{} // closed at the next record; nil until asked for
}

func (h *watchLogs) Enabled(context.Context, slog.Level) bool { return true }
func (h *watchLogs) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	if h.handled != nil {
		close(h.handled)
		h.handled = nil
	}
	return nil
}

// await waits until cond holds, checking it again at each record logged,
// and fails the test if that takes more than watchWait.
func (h *watchLogs) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(watchWait)
	for {
		h.mu.Lock()
		if h.handled == nil {
			h.handled = make(chan struct{})
		}
		next := h.handled
		h.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-next:
		case <-deadline:
			t.Fatalf("no %s within %v", what, watchWait)
		}
	}
}
func (h *watchLogs) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *watchLogs) WithGroup(string) slog.Handler      { return h }

// count returns the number of records at level whose message contains msg
// and whose attributes include each key=substring of attrs.
func (h *watchLogs) count(level slog.Level, msg string, attrs ...string) int {
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
			if g, has := got[k]; !has || !strings.Contains(g, v) {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// scans returns how many times the watcher has listed the store.
func (h *watchLogs) scans() int {
	return h.count(slog.LevelDebug, "sealstore: store unchanged") + h.count(slog.LevelDebug, "sealstore: store snapshot")
}

// watchHarness is a running Watcher on a store.
type watchHarness struct {
	t    *testing.T
	s    *Store
	w    *Watcher
	logs *watchLogs
}

// startWatch runs a Watcher on s until the test ends, after configure (if
// not nil) has set it up, and returns it with the first snapshot.
func startWatch(t *testing.T, s *Store, configure func(*Watcher)) (*watchHarness, Snapshot) {
	t.Helper()
	logs := &watchLogs{}
	h := &watchHarness{t: t, s: s, w: NewWatcher(s, slog.New(logs)), logs: logs}
	if configure != nil {
		configure(h.w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(watchWait):
			t.Errorf("Run did not return within %v of cancel", watchWait)
		}
	})
	return h, h.next()
}

// next waits for the next snapshot.
func (h *watchHarness) next() Snapshot {
	h.t.Helper()
	select {
	case snap, ok := <-h.w.Updates():
		if !ok {
			h.t.Fatal("Updates closed")
		}
		return snap
	case <-time.After(watchWait):
		h.t.Fatalf("no snapshot within %v", watchWait)
		return Snapshot{}
	}
}

// nextAfter waits for the next snapshot and fails if it arrives later than
// limit after since.
func (h *watchHarness) nextAfter(since time.Time, limit time.Duration) Snapshot {
	h.t.Helper()
	snap := h.next()
	if d := time.Since(since); d > limit {
		h.t.Errorf("snapshot arrived %v after the change, want at most %v", d, limit)
	}
	return snap
}

// await reads snapshots until one satisfies done, checking each with check
// (if not nil), and fails if that takes longer than limit after since. It
// returns the snapshot and the names changed in all of them.
func (h *watchHarness) await(since time.Time, limit time.Duration, check func(Snapshot), done func(Snapshot) bool) (Snapshot, []string) {
	h.t.Helper()
	var changed []string
	for {
		snap := h.next()
		changed = append(changed, snap.Changed...)
		if check != nil {
			check(snap)
		}
		if done(snap) {
			if d := time.Since(since); d > limit {
				h.t.Errorf("state reached %v after the change, want at most %v", d, limit)
			}
			slices.Sort(changed)
			return snap, slices.Compact(changed)
		}
	}
}

// rescan forces a snapshot and returns it.
func (h *watchHarness) rescan() Snapshot {
	h.t.Helper()
	h.w.Rescan()
	return h.next()
}

// write writes data to file in the store directory, not atomically.
func (h *watchHarness) write(file string, data []byte) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.s.Dir(), file), data, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// snapEntry describes an Entry: err is "" for a valid blob, else a
// substring of the entry's error.
type snapEntry struct {
	name, err string
}

func validEntries(names ...string) []snapEntry {
	var w []snapEntry
	for _, n := range names {
		w = append(w, snapEntry{n, ""})
	}
	return w
}

// checkSnap checks a snapshot's entries and changed names.
func checkSnap(t *testing.T, snap Snapshot, want []snapEntry, changed []string) {
	t.Helper()
	var got []snapEntry
	for _, e := range snap.Entries {
		w := snapEntry{name: e.Name}
		if e.Err != nil {
			w.err = e.Err.Error()
		} else if e.Blob == nil || e.Blob.Name != e.Name {
			t.Errorf("entry %s: no error but blob %v", e.Name, e.Blob)
		}
		got = append(got, w)
	}
	match := len(got) == len(want)
	for i := 0; match && i < len(got); i++ {
		match = got[i].name == want[i].name && (want[i].err == "") == (got[i].err == "") && strings.Contains(got[i].err, want[i].err)
	}
	if !match {
		t.Errorf("entries = %q, want %q", got, want)
	}
	if changed == nil {
		changed = []string{}
	}
	if !slices.Equal(snap.Changed, changed) {
		t.Errorf("changed = %q, want %q", snap.Changed, changed)
	}
}

// otherTestBlob returns a blob named name whose content differs from
// testBlob(t, name).
func otherTestBlob(t *testing.T, name string) *Blob {
	return testBlobPCRs(t, name, testPCRs(testRand(name+" other"), 0, 7))
}

// watchCreate creates testBlob identities named names in s.
func watchCreate(t *testing.T, s *Store, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := s.Create(testBlob(t, n)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatcherFirstSnapshot(t *testing.T) {
	s := openTestStore(t)
	watchCreate(t, s, "beta", "alpha")
	if err := os.WriteFile(filepath.Join(s.Dir(), "broken.sealed"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), ".alpha.sealed.1.tmp"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, first := startWatch(t, s, nil)
	checkSnap(t, first, []snapEntry{{"alpha", ""}, {"beta", ""}, {"broken", "malformed blob"}}, []string{"alpha", "beta", "broken"})
	if first.DirErr != nil {
		t.Errorf("DirErr = %v", first.DirErr)
	}
	if n := h.logs.count(slog.LevelWarn, "unusable identity file", "name=broken", "path="+s.Path("broken"), "err=malformed blob"); n != 1 {
		t.Errorf("broken blob logged %d times at Warn, want 1", n)
	}

	// An empty store has a first snapshot too.
	_, first = startWatch(t, openTestStore(t), nil)
	checkSnap(t, first, nil, nil)
}

func TestWatcherReportsChanges(t *testing.T) {
	garbage := []byte("-----BEGIN NOT A BLOB-----\n")
	tests := []struct {
		name    string
		change  func(t *testing.T, h *watchHarness)
		want    []snapEntry
		changed []string
		dirErr  error // a target DirErr must wrap
		check   func(t *testing.T, snap Snapshot)
	}{
		{
			name:    "created",
			change:  func(t *testing.T, h *watchHarness) { watchCreate(t, h.s, "b") },
			want:    validEntries("a", "b"),
			changed: []string{"b"},
		},
		{
			name: "replaced with other content",
			change: func(t *testing.T, h *watchHarness) {
				if err := h.s.Replace(otherTestBlob(t, "a")); err != nil {
					t.Fatal(err)
				}
			},
			want:    validEntries("a"),
			changed: []string{"a"},
			check: func(t *testing.T, snap Snapshot) {
				if !blobsEqual(snap.Entries[0].Blob, otherTestBlob(t, "a")) {
					t.Error("snapshot holds the old blob")
				}
			},
		},
		{
			name: "removed",
			change: func(t *testing.T, h *watchHarness) {
				if err := os.Remove(h.s.Path("a")); err != nil {
					t.Fatal(err)
				}
			},
			changed: []string{"a"},
		},
		{
			name:    "corrupt blob added",
			change:  func(t *testing.T, h *watchHarness) { h.write("x.sealed", garbage) },
			want:    []snapEntry{{"a", ""}, {"x", "malformed blob"}},
			changed: []string{"x"},
		},
		{
			name:    "blob overwritten with garbage",
			change:  func(t *testing.T, h *watchHarness) { h.write("a.sealed", garbage) },
			want:    []snapEntry{{"a", "malformed blob"}},
			changed: []string{"a"},
		},
		{
			name: "moved in from elsewhere",
			change: func(t *testing.T, h *watchHarness) {
				outside := filepath.Join(t.TempDir(), "c.sealed")
				if err := os.WriteFile(outside, mustMarshal(t, testBlob(t, "c")), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(outside, h.s.Path("c")); err != nil {
					t.Fatal(err)
				}
			},
			want:    validEntries("a", "c"),
			changed: []string{"c"},
		},
		{
			name: "renamed to another identity",
			change: func(t *testing.T, h *watchHarness) {
				if err := os.Rename(h.s.Path("a"), h.s.Path("z")); err != nil {
					t.Fatal(err)
				}
			},
			// The inner name no longer matches the file name.
			want:    []snapEntry{{"z", "does not match the file name"}},
			changed: []string{"a", "z"},
		},
		{
			name: "store directory removed",
			change: func(t *testing.T, h *watchHarness) {
				if err := os.RemoveAll(h.s.Dir()); err != nil {
					t.Fatal(err)
				}
			},
			changed: []string{"a"},
			dirErr:  fs.ErrNotExist,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t)
			watchCreate(t, s, "a")
			h, first := startWatch(t, s, nil)
			checkSnap(t, first, validEntries("a"), []string{"a"})

			start := time.Now()
			tt.change(t, h)
			snap := h.nextAfter(start, watchPrompt)
			checkSnap(t, snap, tt.want, tt.changed)
			if tt.check != nil {
				tt.check(t, snap)
			}
			switch {
			case tt.dirErr == nil && snap.DirErr != nil:
				t.Errorf("DirErr = %v, want nil", snap.DirErr)
			case tt.dirErr != nil && !errors.Is(snap.DirErr, tt.dirErr):
				t.Errorf("DirErr = %v, want an error wrapping %v", snap.DirErr, tt.dirErr)
			}

			// That was the whole change: a forced rescan finds nothing
			// new (had another snapshot been pending, its changed names
			// would show up here).
			checkSnap(t, h.rescan(), tt.want, nil)
		})
	}
}

func TestWatcherIgnoresOtherFiles(t *testing.T) {
	s := openTestStore(t)
	watchCreate(t, s, "a")
	// The watcher reports each file system event it has handled, with
	// whether a scan is pending then, up to the marker file's.
	const marker = "zz.marker"
	var (
		mu         sync.Mutex
		pending    []string // events after which a scan was pending
		markerSeen = make(chan struct{})
		seen       bool
	)
	h, _ := startWatch(t, s, func(w *Watcher) {
		w.onEvent = func(ev fsnotify.Event, scanPending bool) {
			mu.Lock()
			defer mu.Unlock()
			if seen {
				return
			}
			if scanPending {
				pending = append(pending, ev.String())
			}
			if filepath.Base(ev.Name) == marker {
				seen = true
				close(markerSeen)
			}
		}
	})
	scans := h.logs.scans()

	alpha := mustMarshal(t, testBlob(t, "a"))
	for _, file := range []string{
		".foo.tmp",
		".a.sealed.123456.tmp", // the store's own temporary files
		".hidden.sealed",
		"x.tmp",
		"x.tmp.sealed", // not a valid name
		"a..b.sealed",  // not a valid name
		"a.sealed.bak",
		"notes.txt",
		"lonely.pub",
		"a.pub",
	} {
		h.write(file, alpha)
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(s.Dir(), ".foo.tmp"), filepath.Join(s.Dir(), ".bar.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.Dir(), ".bar.tmp")); err != nil {
		t.Fatal(err)
	}
	// A file next to the store directory, in the watched parent.
	if err := os.WriteFile(filepath.Join(filepath.Dir(s.Dir()), "sibling.sealed"), alpha, 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing that could change the listing happened, so nothing may
	// have scheduled a scan. One inotify queue carries the events of both
	// directories in order: once the watcher has handled the marker's,
	// it has handled every earlier one.
	h.write(marker, nil)
	select {
	case <-markerSeen:
	case <-time.After(watchWait):
		t.Fatalf("the watcher handled no event for %s within %v", marker, watchWait)
	}
	mu.Lock()
	if len(pending) > 0 {
		t.Errorf("ignored files scheduled a scan, pending after: %q", pending)
	}
	mu.Unlock()
	if n := h.logs.scans(); n != scans {
		t.Errorf("ignored files caused %d scans", n-scans)
	}

	start := time.Now()
	watchCreate(t, s, "b")
	checkSnap(t, h.nextAfter(start, watchPrompt), validEntries("a", "b"), []string{"b"})
}

func TestWatcherAtomicWritesOneChange(t *testing.T) {
	s := openTestStore(t)
	h, _ := startWatch(t, s, nil)

	start := time.Now()
	watchCreate(t, s, "a")
	checkSnap(t, h.nextAfter(start, watchPrompt), validEntries("a"), []string{"a"})
	checkSnap(t, h.rescan(), validEntries("a"), nil)

	start = time.Now()
	if err := s.Replace(otherTestBlob(t, "a")); err != nil {
		t.Fatal(err)
	}
	checkSnap(t, h.nextAfter(start, watchPrompt), validEntries("a"), []string{"a"})
	checkSnap(t, h.rescan(), validEntries("a"), nil)

	// Rewriting the same content is no change. The watcher handles
	// events in order, so the scan for the change that follows is either
	// the rewrite's own or comes after it: had the rewrite counted, "a"
	// would be among the changed names received.
	if err := s.Replace(otherTestBlob(t, "a")); err != nil {
		t.Fatal(err)
	}
	watchCreate(t, s, "m")
	checkSnap(t, h.next(), validEntries("a", "m"), []string{"m"})
	checkSnap(t, h.rescan(), validEntries("a", "m"), nil)
}

func TestWatcherNeverSeesPartialBlobs(t *testing.T) {
	s := openTestStore(t)
	watchCreate(t, s, "a")
	h, _ := startWatch(t, s, nil)

	blobs := []*Blob{testBlob(t, "a"), otherTestBlob(t, "a")}
	final := testBlobPCRs(t, "a", testPCRs(testRand("final"), 3))
	errc := make(chan error, 1)
	go func() {
		for i := range 40 {
			if err := s.Replace(blobs[i%2]); err != nil {
				errc <- err
				return
			}
		}
		errc <- s.Replace(final)
	}()
	start := time.Now()
	_, _ = h.await(start, watchWait, func(snap Snapshot) {
		if len(snap.Entries) != 1 || snap.Entries[0].Err != nil {
			t.Fatalf("snapshot during atomic rewrites: %+v", snap.Entries)
		}
	}, func(snap Snapshot) bool {
		return blobsEqual(snap.Entries[0].Blob, final)
	})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n := h.logs.count(slog.LevelWarn, ""); n != 0 {
		t.Errorf("%d warnings during atomic rewrites", n)
	}
}

func TestWatcherCorruptBlobLoggedOncePerContent(t *testing.T) {
	s := openTestStore(t)
	h, _ := startWatch(t, s, nil)
	warnings := func() int {
		return h.logs.count(slog.LevelWarn, "unusable identity file", "name=x")
	}
	corrupt := []snapEntry{{"x", "malformed blob"}}

	h.write("x.sealed", []byte("garbage one"))
	checkSnap(t, h.next(), corrupt, []string{"x"})
	for range 3 {
		checkSnap(t, h.rescan(), corrupt, nil)
	}
	if n := warnings(); n != 1 {
		t.Fatalf("corrupt blob logged %d times after 4 scans, want 1", n)
	}

	h.write("x.sealed", []byte("garbage two"))
	checkSnap(t, h.next(), corrupt, []string{"x"})
	h.write("x.sealed", []byte("garbage two")) // same content again
	// A real change after it: its snapshot comes from the rewrite's scan
	// or a later one, and would name "x" had the rewrite counted.
	watchCreate(t, s, "m")
	checkSnap(t, h.next(), []snapEntry{{"m", ""}, {"x", "malformed blob"}}, []string{"m"})
	if n := warnings(); n != 2 {
		t.Fatalf("corrupt blob logged %d times for two contents, want 2", n)
	}
	if err := os.Remove(s.Path("m")); err != nil {
		t.Fatal(err)
	}
	checkSnap(t, h.next(), corrupt, []string{"m"})
	checkSnap(t, h.rescan(), corrupt, nil)

	// Repaired, then broken again the first way: that is news again.
	h.write("x.sealed", mustMarshal(t, testBlob(t, "x")))
	checkSnap(t, h.next(), validEntries("x"), []string{"x"})
	h.write("x.sealed", []byte("garbage one"))
	checkSnap(t, h.next(), corrupt, []string{"x"})
	if n := warnings(); n != 3 {
		t.Errorf("corrupt blob logged %d times, want 3", n)
	}
}

func TestWatcherRescan(t *testing.T) {
	s := openTestStore(t)
	watchCreate(t, s, "a", "b")
	h, first := startWatch(t, s, nil)
	for range 2 {
		snap := h.rescan()
		checkSnap(t, snap, validEntries("a", "b"), nil)
		if snap.Changed == nil {
			t.Error("Changed is nil, want empty")
		}
		if snap.Entries[0].Blob == first.Entries[0].Blob {
			t.Error("rescan reused the old listing")
		}
	}
	if n := h.logs.count(slog.LevelInfo, "rescanning the store on request", "path="+s.Dir()); n != 2 {
		t.Errorf("rescan logged %d times, want 2", n)
	}
}

func TestWatcherStoreDirectoryComesBack(t *testing.T) {
	tests := []struct {
		name string
		// remove removes the store directory; recreate brings back a
		// directory at the same path.
		remove, recreate func(t *testing.T, dir string)
		// limit bounds the time from recreate to the identity being
		// listed.
		limit time.Duration
	}{
		{
			name:     "directory removed and made again",
			remove:   func(t *testing.T, dir string) { watchRemoveAll(t, dir) },
			recreate: func(t *testing.T, dir string) { watchMkdir(t, dir, 0o700) },
			limit:    watchPrompt,
		},
		{
			name:   "directory renamed away and made again",
			remove: func(t *testing.T, dir string) { watchRename(t, dir, dir+".old") },
			recreate: func(t *testing.T, dir string) {
				watchMkdir(t, dir, 0o700)
				watchRemoveAll(t, dir+".old")
			},
			limit: watchPrompt,
		},
		{
			name:     "made again with loose permissions",
			remove:   func(t *testing.T, dir string) { watchRemoveAll(t, dir) },
			recreate: func(t *testing.T, dir string) { watchMkdir(t, dir, 0o755) },
			limit:    watchPrompt,
		},
		{
			name:   "replaced by a file and back",
			remove: func(t *testing.T, dir string) { watchRemoveAll(t, dir); watchWriteFile(t, dir, "not a directory") },
			recreate: func(t *testing.T, dir string) {
				watchRemoveAll(t, dir)
				watchMkdir(t, dir, 0o700)
			},
			limit: watchPrompt,
		},
		{
			// The parent's watch goes too; only polling (every
			// second) can find the directory again.
			name:     "parent removed and made again",
			remove:   func(t *testing.T, dir string) { watchRemoveAll(t, filepath.Dir(dir)) },
			recreate: func(t *testing.T, dir string) { watchMkdir(t, filepath.Dir(dir), 0o700); watchMkdir(t, dir, 0o700) },
			limit:    pollInterval + watchPrompt,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(filepath.Join(t.TempDir(), "parent", "identities"))
			if err != nil {
				t.Fatal(err)
			}
			watchCreate(t, s, "a")
			h, _ := startWatch(t, s, nil)

			start := time.Now()
			tt.remove(t, s.Dir())
			snap := h.nextAfter(start, watchPrompt)
			checkSnap(t, snap, nil, []string{"a"})
			if snap.DirErr == nil {
				t.Fatal("DirErr is nil for a removed store directory")
			}
			// Logged once per state (a scan may catch the directory
			// both missing and replaced), not once per poll.
			missing := h.logs.count(slog.LevelWarn, "store directory is missing", "path="+s.Dir())
			unusable := h.logs.count(slog.LevelError, "store directory is unusable", "path="+s.Dir())
			if missing+unusable == 0 || missing > 1 || unusable > 1 {
				t.Errorf("removal logged %d times as missing and %d as unusable", missing, unusable)
			}

			start = time.Now()
			tt.recreate(t, s.Dir())
			watchCreate(t, s, "b")
			last, changed := h.await(start, tt.limit, nil, func(snap Snapshot) bool {
				return len(snap.Entries) == 1
			})
			checkSnap(t, last, validEntries("b"), last.Changed)
			if !slices.Equal(changed, []string{"b"}) {
				t.Errorf("changed since the removal: %q, want [b]", changed)
			}
			if last.DirErr != nil {
				t.Errorf("DirErr = %v after the directory came back", last.DirErr)
			}
			if m := mode(t, s.Dir()).Perm(); m != 0o700 {
				t.Errorf("store directory mode %v, want 0700", m)
			}

			// The new directory is watched.
			start = time.Now()
			if err := os.Remove(s.Path("b")); err != nil {
				t.Fatal(err)
			}
			checkSnap(t, h.nextAfter(start, watchPrompt), nil, []string{"b"})
		})
	}
}

func watchRemoveAll(t *testing.T, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
}

func watchMkdir(t *testing.T, path string, perm os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // past the umask
		t.Fatal(err)
	}
}

func watchRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func watchWriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hookFSWatcher makes Run create its file system watcher with create, and
// returns a channel receiving each watcher created.
func hookFSWatcher(t *testing.T, create func() (*fsnotify.Watcher, error)) <-chan *fsnotify.Watcher {
	t.Helper()
	created := make(chan *fsnotify.Watcher, 1)
	orig := newFSWatcher
	newFSWatcher = func() (*fsnotify.Watcher, error) {
		fsw, err := create()
		if err == nil {
			created <- fsw
		}
		return fsw, err
	}
	// Registered before startWatch's cleanup, so it runs after Run has
	// returned.
	t.Cleanup(func() { newFSWatcher = orig })
	return created
}

func receiveFSWatcher(t *testing.T, created <-chan *fsnotify.Watcher) *fsnotify.Watcher {
	t.Helper()
	select {
	case fsw := <-created:
		return fsw
	case <-time.After(watchWait):
		t.Fatal("Run created no file system watcher")
		return nil
	}
}

func TestWatcherSurvivesWatchErrors(t *testing.T) {
	created := hookFSWatcher(t, fsnotify.NewWatcher)
	s := openTestStore(t)
	h, _ := startWatch(t, s, nil)
	fsw := receiveFSWatcher(t, created)

	for _, err := range []error{fsnotify.ErrEventOverflow, errors.New("watch broke")} {
		select {
		case fsw.Errors <- err:
		case <-time.After(watchWait):
			t.Fatal("Run does not read watch errors")
		}
	}
	start := time.Now()
	watchCreate(t, s, "a")
	checkSnap(t, h.nextAfter(start, watchPrompt), validEntries("a"), []string{"a"})
	for _, msg := range []string{"queue or buffer overflow", "watch broke"} {
		if n := h.logs.count(slog.LevelWarn, "file system watch error", "err="+msg, "path="+s.Dir()); n != 1 {
			t.Errorf("watch error %q logged %d times, want 1", msg, n)
		}
	}
}

func TestWatcherPeriodicRescanRecoversLostWatch(t *testing.T) {
	created := hookFSWatcher(t, fsnotify.NewWatcher)
	s := openTestStore(t)
	h, _ := startWatch(t, s, func(w *Watcher) { w.RescanInterval = 200 * time.Millisecond })
	fsw := receiveFSWatcher(t, created)

	// Lose the watch on the store directory behind the watcher's back:
	// no event reports the next change.
	if err := fsw.Remove(s.Dir()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	watchCreate(t, s, "a")
	checkSnap(t, h.nextAfter(start, watchWait), validEntries("a"), []string{"a"})
	if !slices.Contains(fsw.WatchList(), s.Dir()) {
		t.Errorf("store directory not watched again: %q", fsw.WatchList())
	}
}

// Without file system events the watcher only polls: the test runs on the
// fake clock of a synctest bubble, where the polls take no time.
func TestWatcherWithoutNotifications(t *testing.T) {
	synctest.Test(t, testWatcherWithoutNotifications)
}

func testWatcherWithoutNotifications(t *testing.T) {
	hookFSWatcher(t, func() (*fsnotify.Watcher, error) {
		return nil, errors.New("inotify: too many instances")
	})
	s := openTestStore(t)
	watchCreate(t, s, "a")
	h, first := startWatch(t, s, nil)
	checkSnap(t, first, validEntries("a"), []string{"a"})
	if n := h.logs.count(slog.LevelWarn, "polling it instead", "err=too many instances", "path="+s.Dir()); n != 1 {
		t.Errorf("missing notifications logged %d times, want 1", n)
	}

	// Polled every second.
	start := time.Now()
	watchCreate(t, s, "b")
	checkSnap(t, h.nextAfter(start, pollInterval+watchPrompt), validEntries("a", "b"), []string{"b"})
	start = time.Now()
	if err := os.Remove(s.Path("a")); err != nil {
		t.Fatal(err)
	}
	checkSnap(t, h.nextAfter(start, pollInterval+watchPrompt), validEntries("b"), []string{"a"})
}

func TestWatcherSlowReceiver(t *testing.T) {
	s := openTestStore(t)
	watchCreate(t, s, "a")
	h, _ := startWatch(t, s, nil)

	// Two changes, each listed, before the receiver looks: it gets one
	// snapshot with both.
	for i, name := range []string{"b", "c"} {
		watchCreate(t, s, name)
		h.logs.await(t, "scan after creating "+name, func() bool {
			return h.logs.count(slog.LevelDebug, "sealstore: store snapshot") >= 2+i
		})
	}
	checkSnap(t, h.next(), validEntries("a", "b", "c"), []string{"b", "c"})
	checkSnap(t, h.rescan(), validEntries("a", "b", "c"), nil)
}

func TestWatcherRunEnds(t *testing.T) {
	s := openTestStore(t)
	w := NewWatcher(s, slog.New(&watchLogs{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// Not receiving the first snapshot must not keep Run from ending.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(watchWait):
		t.Fatalf("Run did not return within %v of cancel", watchWait)
	}
	for range w.Updates() {
		// A snapshot may have been taken just before the cancel; the
		// channel must be closed after it.
	}
	if err := w.Run(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "sealstore: ") {
		t.Errorf("second Run = %v, want a sealstore error", err)
	}
}

// TestWatcherHostileFiles: a FIFO, a link to /dev/zero and a dangling
// link in the store are listed with an error saying what they are, logged
// once each, and neither hang the watcher nor hide the good identities;
// an identity added afterwards is still picked up.
func TestWatcherHostileFiles(t *testing.T) {
	s := openTestStore(t)
	watchCreate(t, s, "a")
	dir := s.Dir()
	if err := syscall.Mkfifo(filepath.Join(dir, "p.sealed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "z.sealed")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "moved"), filepath.Join(dir, "g.sealed")); err != nil {
		t.Fatal(err)
	}
	hostile := []snapEntry{
		{"a", ""},
		{"g", "g.sealed: is a dangling symbolic link to " + filepath.Join(dir, "moved")},
		{"p", "p.sealed: not a regular file (a FIFO)"},
		{"z", "z.sealed: not a regular file (a character device)"},
	}
	h, first := startWatch(t, s, nil)
	checkSnap(t, first, hostile, []string{"a", "g", "p", "z"})
	checkSnap(t, h.rescan(), hostile, nil)
	for _, name := range []string{"g", "p", "z"} {
		if n := h.logs.count(slog.LevelWarn, "unusable identity file", "name="+name); n != 1 {
			t.Errorf("%s logged %d times after 2 scans, want 1", name, n)
		}
	}

	since := time.Now()
	watchCreate(t, s, "b")
	_, _ = h.await(since, watchWait, nil, func(snap Snapshot) bool {
		return len(snap.Entries) == 5
	})
}
