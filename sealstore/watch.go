package sealstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultRescanInterval is how often a Watcher re-lists its store even when
// no file system event arrived, as a safety net against lost events.
const DefaultRescanInterval = 30 * time.Second

const (
	// debounceDelay is how long a Watcher waits after a relevant event for
	// more of the same burst before it re-lists the store.
	debounceDelay = 100 * time.Millisecond
	// maxDebounceDelay bounds the wait from the first event of a burst,
	// so that a steady stream of events cannot postpone the re-listing
	// indefinitely.
	maxDebounceDelay = 500 * time.Millisecond
	// pollInterval is how often a Watcher re-lists the store while the
	// store directory is unusable (for example removed) or while file
	// system events are unavailable.
	pollInterval = time.Second
)

// newFSWatcher creates the file system watcher; tests replace it.
var newFSWatcher = fsnotify.NewWatcher

// Snapshot is the state of a store at one moment, as sent by a Watcher.
// Snapshots share Blob values and errors with each other: treat them as
// read-only.
type Snapshot struct {
	// Entries are the identities in the store, as Store.List returns
	// them: sorted by name, unusable files included with Err set.
	Entries []Entry
	// Changed lists, sorted, the names of the identities added, modified
	// (the file's content differs) or removed since the previous snapshot
	// sent. In the first snapshot it lists every entry.
	Changed []string
	// DirErr is set when the store directory itself is unusable: removed,
	// replaced by something that is not a directory, or owned by another
	// user. Entries is then empty, and the Watcher keeps checking for the
	// directory to come back.
	DirErr error
}

// Watcher watches a Store's directory and reports its identities as they
// change, so that a long-running agent picks up identities sealed, resealed
// or deleted by other processes without a restart.
//
// It uses file system notifications (inotify on Linux) on the store
// directory and on its parent, so that the directory being removed and
// created again is noticed too. Only events about files that can be
// identities (NAME.sealed with a valid NAME, see ValidName) count: the
// hidden temporary files that Store writes through, and any other file, are
// ignored. A burst of events is debounced (about 100 ms after the last
// event, at most 500 ms after the first) into a single re-listing of the
// store, and a snapshot is sent only if the listing differs from the
// previous one. Because Store writes every file to a temporary name and
// renames it into place, a write shows up as exactly one change and a
// half-written blob is never seen.
//
// Changes are detected by the SHA-256 of the bytes of each NAME.sealed file
// that the listing read and parsed (each file is read once per scan), so
// that a file replaced after it was read differs at the next scan and is
// reported then rather than missed. A file that is not a valid blob is an
// Entry with Err: it is logged at Warn level once per distinct content and
// never stops the watch.
//
// As a safety net against lost events (an inotify queue overflow, a watch
// lost to a race), the store is also re-listed every RescanInterval. If
// notifications are unavailable altogether (for example the inotify watch
// limit is reached), or while the store directory is missing, the Watcher
// polls every second instead.
type Watcher struct {
	// RescanInterval is how often the store is re-listed without any
	// event; zero means DefaultRescanInterval. Set it before Run.
	RescanInterval time.Duration

	store   *Store
	log     *slog.Logger
	updates chan Snapshot
	rescan  chan struct{}
	running atomic.Bool

	// onEvent, if set (by tests, before Run), is called from Run after
	// it has handled each file system event, with whether a debounced
	// scan is pending then.
	onEvent func(ev fsnotify.Event, scanPending bool)
}

// NewWatcher returns a Watcher for s that logs to log (slog.Default() if
// nil). It does nothing until Run is called.
func NewWatcher(s *Store, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.Default()
	}
	return &Watcher{
		store:   s,
		log:     log,
		updates: make(chan Snapshot),
		rescan:  make(chan struct{}, 1),
	}
}

// Updates returns the channel on which Run sends snapshots. A snapshot the
// receiver has not taken yet is replaced by a newer one, with the Changed
// names of both, so Run never blocks on a slow receiver. Run closes the
// channel when it returns.
func (w *Watcher) Updates() <-chan Snapshot {
	return w.updates
}

// Rescan asks Run to re-list the store now and to send a snapshot even if
// nothing changed, as the agent does on SIGHUP. It does not block.
func (w *Watcher) Rescan() {
	select {
	case w.rescan <- struct{}{}:
	default:
	}
}

// Run watches the store until ctx ends, then closes the Updates channel and
// returns nil. On start it lists the store and sends a first snapshot; after
// every burst of changes it lists the store again and, if anything changed,
// sends the full current snapshot. File system watch errors are logged and
// the watch goes on. Run may be called only once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("sealstore: watcher Run called more than once")
	}
	defer close(w.updates)

	r := &watchRun{
		w:        w,
		dir:      w.store.Dir(),
		warned:   make(map[string]fileSum),
		watchErr: make(map[string]string),
	}
	r.parent = filepath.Dir(r.dir)
	rescanEvery := w.RescanInterval
	if rescanEvery <= 0 {
		rescanEvery = DefaultRescanInterval
	}
	r.pollEvery = min(rescanEvery, pollInterval)

	var (
		events <-chan fsnotify.Event
		errs   <-chan error
	)
	if fsw, err := newFSWatcher(); err != nil {
		w.log.Warn("sealstore: cannot watch the store directory for changes; polling it instead",
			"path", r.dir, "interval", r.pollEvery, "err", err)
	} else {
		r.fsw = fsw
		defer fsw.Close()
		events, errs = fsw.Events, fsw.Errors
	}

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var burst time.Time // first event of the pending burst; zero if none
	r.poll = time.NewTimer(time.Hour)
	r.poll.Stop()
	defer r.poll.Stop()
	rescanTick := time.NewTicker(rescanEvery)
	defer rescanTick.Stop()

	// schedule arranges a scan debounceDelay from now, but no later than
	// maxDebounceDelay after the first event of the burst.
	schedule := func() {
		now := time.Now()
		if burst.IsZero() {
			burst = now
		}
		debounce.Reset(max(0, min(debounceDelay, burst.Add(maxDebounceDelay).Sub(now))))
	}

	r.ensureWatches()
	r.scan("start", true)
	for {
		var (
			out  chan<- Snapshot // nil, never ready, unless a snapshot is pending
			snap Snapshot
		)
		if r.pending != nil {
			out, snap = w.updates, *r.pending
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				w.log.Warn("sealstore: file system watch closed; polling the store directory instead", "path", r.dir)
				events, errs, r.fsw = nil, nil, nil
				r.ensureWatches()
				r.armPoll()
				continue
			}
			relevant, dirEvent := r.classify(ev)
			if dirEvent {
				r.ensureWatches()
			}
			if relevant {
				schedule()
			}
			if w.onEvent != nil {
				w.onEvent(ev, !burst.IsZero())
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// An overflow loses events; others may have too. Either
			// way, look again soon.
			w.log.Warn("sealstore: file system watch error; rescanning the store", "path", r.dir, "err", err)
			r.ensureWatches()
			schedule()
		case <-debounce.C:
			burst = time.Time{}
			r.scan("change", false)
		case <-r.poll.C:
			r.ensureWatches()
			r.scan("poll", false)
		case <-rescanTick.C:
			r.ensureWatches()
			r.scan("periodic", false)
		case <-w.rescan:
			w.log.Info("sealstore: rescanning the store on request", "path", r.dir)
			r.ensureWatches()
			r.scan("request", true)
		case out <- snap:
			r.pending = nil
		}
	}
}

// fileSum identifies the content of a NAME.sealed file: the SHA-256 of its
// bytes, or why they could not be read.
type fileSum struct {
	sum [sha256.Size]byte
	err string
}

// watchRun is the state of one Watcher.Run.
type watchRun struct {
	w           *Watcher
	dir, parent string
	fsw         *fsnotify.Watcher // nil if events are unavailable
	dirWatched  bool              // the store directory is being watched
	watchErr    map[string]string // last error adding a watch, by path
	poll        *time.Timer       // armed while polling
	pollEvery   time.Duration

	scanned bool               // a snapshot has been made
	sums    map[string]fileSum // content of each entry at the last scan
	dirErr  string             // DirErr of the last scan, "" if none
	warned  map[string]fileSum // unusable files already logged
	pending *Snapshot          // not yet taken by the receiver
}

// classify tells whether ev can change the listing (relevant) and whether
// it concerns the store directory or its parent themselves (dirEvent), in
// which case the watches must be checked.
func (r *watchRun) classify(ev fsnotify.Event) (relevant, dirEvent bool) {
	name := filepath.Clean(ev.Name)
	switch {
	case name == r.dir || name == r.parent:
		return true, true
	case filepath.Dir(name) == r.dir:
		_, ok := blobFileName(filepath.Base(name))
		return ok, false
	default:
		// Something else in the parent directory.
		return false, false
	}
}

// ensureWatches (re-)adds the watches on the parent and on the store
// directory that are missing, as after the directory was removed and
// created again. A directory that does not exist is left for a later call;
// other failures are logged once per distinct error. Until the store
// directory is watched, armPoll polls.
func (r *watchRun) ensureWatches() {
	r.dirWatched = false
	if r.fsw == nil {
		return
	}
	watched := r.fsw.WatchList()
	for _, path := range []string{r.parent, r.dir} {
		if !slices.Contains(watched, path) {
			if err := r.fsw.Add(path); err != nil {
				if !errors.Is(err, fs.ErrNotExist) && r.watchErr[path] != err.Error() {
					r.w.log.Warn("sealstore: cannot watch directory; polling it instead", "path", path, "err", err)
				}
				r.watchErr[path] = err.Error()
				continue
			}
			r.w.log.Debug("sealstore: watching directory", "path", path)
		}
		delete(r.watchErr, path)
		if path == r.dir {
			r.dirWatched = true
		}
	}
}

// armPoll starts the poll timer if the store must be polled: while the
// store directory is not watched (events are unavailable, or it is missing)
// or is unusable.
func (r *watchRun) armPoll() {
	if !r.dirWatched || r.dirErr != "" {
		r.poll.Reset(r.pollEvery)
	}
}

// scan lists the store and queues a snapshot if the listing changed, or in
// any case if force is set.
func (r *watchRun) scan(reason string, force bool) {
	log := r.w.log
	entries, sums, dirErr := r.list()
	defer r.armPoll()

	dirErrMsg := ""
	if dirErr != nil {
		dirErrMsg = dirErr.Error()
	}
	if dirErrMsg != r.dirErr {
		switch {
		case dirErr == nil:
			log.Info("sealstore: store directory is usable again", "path", r.dir)
		case errors.Is(dirErr, fs.ErrNotExist):
			log.Warn("sealstore: store directory is missing; serving no identities until it is back", "path", r.dir)
		default:
			log.Error("sealstore: store directory is unusable; serving no identities until it is fixed", "path", r.dir, "err", dirErr)
		}
	}

	// Log each unusable file once per distinct content.
	for _, e := range entries {
		if e.Err == nil {
			delete(r.warned, e.Name)
			continue
		}
		if s, ok := r.warned[e.Name]; ok && s == sums[e.Name] {
			continue
		}
		r.warned[e.Name] = sums[e.Name]
		log.Warn("sealstore: ignoring unusable identity file", "name", e.Name, "path", e.Path, "err", e.Err)
	}
	for name := range r.warned {
		if _, ok := sums[name]; !ok {
			delete(r.warned, name)
		}
	}

	var changed []string
	for name, s := range sums {
		if old, ok := r.sums[name]; !ok || old != s {
			changed = append(changed, name)
		}
	}
	for name := range r.sums {
		if _, ok := sums[name]; !ok {
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	changed = slices.Compact(changed)

	first := !r.scanned
	if !force && !first && len(changed) == 0 && dirErrMsg == r.dirErr {
		log.Debug("sealstore: store unchanged", "path", r.dir, "reason", reason)
		return
	}
	r.scanned, r.sums, r.dirErr = true, sums, dirErrMsg
	log.Debug("sealstore: store snapshot", "path", r.dir, "reason", reason, "identities", len(entries), "changed", changed)

	next := Snapshot{Entries: entries, Changed: changed, DirErr: dirErr}
	if r.pending != nil {
		next.Changed = slices.Compact(slices.Sorted(slices.Values(append(r.pending.Changed, changed...))))
	}
	if next.Changed == nil {
		next.Changed = []string{}
	}
	r.pending = &next
}

// list lists the store and fingerprints each entry's file by the bytes
// List read and parsed, so that each file is read once per scan and its
// sum is exactly what the entry shows: a change after the read makes the
// next scan's sum differ, and the file is reported again.
func (r *watchRun) list() ([]Entry, map[string]fileSum, error) {
	if err := r.checkDir(); err != nil {
		return nil, map[string]fileSum{}, err
	}
	sums := make(map[string]fileSum)
	entries, err := r.w.store.list(func(name string, data []byte, err error) {
		if err != nil {
			sums[name] = fileSum{err: err.Error()}
			return
		}
		sums[name] = fileSum{sum: sha256.Sum256(data)}
	})
	if err != nil {
		return nil, map[string]fileSum{}, err
	}
	return entries, sums, nil
}

// checkDir checks the store directory as it is now, as Open did when the
// store was opened: it may have been removed and created again since. It
// must be a directory owned by the current user; group and other permission
// bits are removed.
func (r *watchRun) checkDir() error {
	was, err := checkDir(r.dir)
	if err == nil && was != 0 {
		r.w.log.Warn("sealstore: restricted store directory to mode 0700", "path", r.dir, "was", was.String())
	}
	return err
}

// blobFileName returns the identity name of a file in the store directory
// if it is one Store.List lists: NAME.sealed with a valid NAME, not hidden.
func blobFileName(file string) (string, bool) {
	name, ok := strings.CutSuffix(file, sealedExt)
	if !ok || strings.HasPrefix(file, ".") || ValidName(name) != nil {
		return "", false
	}
	return name, true
}
