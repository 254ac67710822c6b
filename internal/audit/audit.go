// Package audit keeps icn-agent's tamper-evident log of signatures: one
// JSON object per line, each naming the SHA-256 of the line before it, with
// checkpoints the TPM signs.
//
// # Format
//
// The log lives in a directory: the current file audit.log and, after
// rotation, older files audit.log.1, audit.log.2, ... (the higher the
// number, the newer). Each line is a [Record] in compact JSON. Its "prev"
// member is the lowercase hex SHA-256 of the previous line's bytes (without
// the newline), across files; the very first record's is 64 zeros. "seq"
// counts records from 1, across files. So editing, inserting, deleting or
// reordering a record breaks the chain at the first record after it.
//
// A checkpoint record ("event": "checkpoint") carries a TPM stamp
// (attest.Stamp): the attestation key's quote whose qualifyingData is
// SHA-256("icn-agent audit v1\x00" || head), where head is the hash of the
// record it covers ("covers" is that record's seq). Checkpoints are written
// at most every Options.CheckpointEvery records or Options.CheckpointAfter,
// whichever comes first, and when the log is closed. After each, the file
// audit.anchor is replaced (atomically) with a copy of the checkpoint
// record, so that cutting the log short (a truncation, or deleting the
// newest files) is seen even when the cut removes the checkpoints too.
//
// # What it proves
//
// Without the TPM nobody can make a stamp, so a checkpoint proves that the
// chain up to the record it covers existed when the TPM signed it, at the
// TPM clock it names. What a local attacker with the user's rights can
// still do: drop or rewrite records after the last checkpoint (at most the
// last Options.CheckpointEvery records or Options.CheckpointAfter), and
// roll the log and the anchor back together to an earlier checkpoint.
// docs/security.md says more.
package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/icn/icn-agent/attest"
)

// File names in the log directory.
const (
	CurrentFile = "audit.log"
	AnchorFile  = "audit.anchor"
)

// stampDomain separates checkpoint stamps from every other use of the AK.
const stampDomain = "icn-agent audit v1\x00"

// Defaults of Options.
const (
	DefaultCheckpointEvery = 100
	DefaultCheckpointAfter = 60 * time.Second
	DefaultMaxFileSize     = 16 << 20
)

// maxLine bounds one record's line when reading a log.
const maxLine = 64 << 10

// Record is one line of the log. Only the members of its event are set.
type Record struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Event string    `json:"event"` // start, sign, refuse, checkpoint, stop
	// Signatures and refusals.
	Key        string `json:"key,omitempty"`     // SHA256 fingerprint
	Name       string `json:"name,omitempty"`    // the identity's name, or the key's comment
	Backend    string `json:"backend,omitempty"` // sealed, software, upstream
	PeerUID    *int   `json:"peer_uid,omitempty"`
	PeerPID    int    `json:"peer_pid,omitempty"`
	PeerExe    string `json:"peer_exe,omitempty"`
	Dest       string `json:"dest,omitempty"` // destination host key fingerprint (session-bind)
	DataSHA256 string `json:"data_sha256,omitempty"`
	Outcome    string `json:"outcome,omitempty"` // signed, or why not
	// Checkpoints.
	Covers uint64        `json:"covers,omitempty"`
	Head   string        `json:"head,omitempty"`
	Stamp  *attest.Stamp `json:"stamp,omitempty"`
	// The chain.
	Prev string `json:"prev"`
}

// Stamper has the TPM sign a digest (attesttpm.AK.Stamp with its TPM).
type Stamper interface {
	Stamp(ctx context.Context, digest []byte) (*attest.Stamp, error)
}

// Options configure a Log.
type Options struct {
	// Stamper signs checkpoints; nil writes none (the log is then only a
	// hash chain, which proves nothing against its owner).
	Stamper Stamper
	// CheckpointEvery and CheckpointAfter bound how many records and how
	// long may pass without a checkpoint. Zero means the defaults.
	CheckpointEvery int
	CheckpointAfter time.Duration
	// MaxFileSize is the size past which audit.log is rotated.
	MaxFileSize int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the log's own failures.
	Logger *slog.Logger
}

// Log appends records to a log directory. Its methods are safe for
// concurrent use.
type Log struct {
	dir  string
	opts Options

	mu        sync.Mutex
	f         *os.File
	buf       []byte // the lines of the batch being written
	size      int64
	seq       uint64
	head      [sha256.Size]byte // hash of the last line
	sinceCP   int               // records since the last checkpoint
	lastCP    time.Time
	closed    bool
	stamping  bool
	failed    error // sticky write failure, reported once
	checkWake chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
}

// Open opens (creating if needed, mode 0700) the log directory dir for
// appending: it reads the chain's end from the existing files (without
// verifying them: see Verify) and writes a "start" record.
func Open(dir string, opts Options) (*Log, error) {
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	if opts.CheckpointAfter <= 0 {
		opts.CheckpointAfter = DefaultCheckpointAfter
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{dir: dir, opts: opts, checkWake: make(chan struct{}, 1), done: make(chan struct{})}
	files, err := logFiles(dir)
	if err != nil {
		return nil, err
	}
	// The chain continues from the last line of the newest file that has
	// one.
	for i := len(files) - 1; i >= 0; i-- {
		last, ok, err := lastLine(files[i])
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		var r Record
		if err := json.Unmarshal(last, &r); err != nil {
			return nil, fmt.Errorf("audit: %s: last record: %w", files[i], err)
		}
		l.seq, l.head = r.Seq, sha256.Sum256(last)
		break
	}
	f, err := os.OpenFile(filepath.Join(dir, CurrentFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	l.f, l.size, l.lastCP = f, fi.Size(), opts.Now()
	if err := l.Append(Record{Event: "start"}); err != nil {
		f.Close()
		return nil, err
	}
	l.wg.Add(1)
	go l.checkpointer()
	return l, nil
}

// Append adds r to the log, filling in Seq, Time (if zero) and Prev. It
// writes the line before returning (without fsync: checkpoints sync).
func (l *Log) Append(r Record) error {
	return l.AppendAll([]Record{r})
}

// AppendAll adds records to the log in order, as Append does, with one
// write for all of them: a busy agent's records cost one system call per
// batch, not per signature.
func (l *Log) AppendAll(records []Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("audit: log is closed")
	}
	if err := l.appendLocked(records...); err != nil {
		return err
	}
	for _, r := range records {
		if r.Event != "checkpoint" {
			l.sinceCP++
		}
	}
	if l.sinceCP >= l.opts.CheckpointEvery {
		select {
		case l.checkWake <- struct{}{}:
		default:
		}
	}
	return nil
}

// appendLocked chains records after the log's head and writes them with
// one write. On failure nothing of the batch counts as written.
func (l *Log) appendLocked(records ...Record) error {
	if l.failed != nil {
		return l.failed
	}
	if l.size >= l.opts.MaxFileSize {
		if err := l.rotateLocked(); err != nil {
			l.fail(err)
			return err
		}
	}
	seq, head := l.seq, l.head
	l.buf = l.buf[:0]
	for _, r := range records {
		seq++
		r.Seq = seq
		if r.Time.IsZero() {
			r.Time = l.opts.Now().UTC()
		}
		r.Prev = hex.EncodeToString(head[:])
		n := len(l.buf)
		var err error
		if l.buf, err = appendRecord(l.buf, &r); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		head = sha256.Sum256(l.buf[n:])
		l.buf = append(l.buf, '\n')
	}
	if _, err := l.f.Write(l.buf); err != nil {
		l.fail(err)
		return l.failed
	}
	l.size += int64(len(l.buf))
	l.seq, l.head = seq, head
	return nil
}

// fail records a write failure, logged once; the log refuses records
// from then on.
func (l *Log) fail(err error) {
	l.failed = fmt.Errorf("audit: writing the log: %w", err)
	l.opts.Logger.Error("audit: the audit log cannot be written; signatures are no longer recorded", "dir", l.dir, "err", err)
}

// rotateLocked renames audit.log to the next audit.log.N and starts a new
// one; the chain carries on across the files.
func (l *Log) rotateLocked() error {
	files, err := logFiles(l.dir)
	if err != nil {
		return err
	}
	next := 1
	for _, f := range files {
		if n, ok := rotatedNumber(filepath.Base(f)); ok && n >= next {
			next = n + 1
		}
	}
	if err := l.f.Sync(); err != nil {
		return err
	}
	if err := l.f.Close(); err != nil {
		return err
	}
	cur := filepath.Join(l.dir, CurrentFile)
	if err := os.Rename(cur, cur+"."+strconv.Itoa(next)); err != nil {
		return err
	}
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	l.f, l.size = f, 0
	return nil
}

// checkpointer writes checkpoints when enough records or time have passed.
func (l *Log) checkpointer() {
	defer l.wg.Done()
	t := time.NewTicker(l.opts.CheckpointAfter)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-l.checkWake:
		case <-t.C:
		}
		l.mu.Lock()
		due := l.sinceCP >= l.opts.CheckpointEvery || (l.sinceCP > 0 && l.opts.Now().Sub(l.lastCP) >= l.opts.CheckpointAfter)
		l.mu.Unlock()
		if due {
			if err := l.Checkpoint(context.Background()); err != nil {
				l.opts.Logger.Warn("audit: checkpoint failed", "err", err)
			}
		}
	}
}

// Checkpoint has the TPM stamp the log's head and appends the checkpoint
// record, then syncs the file and replaces the anchor. Records appended
// while the TPM works are covered by the next checkpoint.
func (l *Log) Checkpoint(ctx context.Context) error {
	if l.opts.Stamper == nil {
		return nil
	}
	l.mu.Lock()
	if l.stamping || l.failed != nil {
		l.mu.Unlock()
		return l.failed
	}
	l.stamping = true
	covers, head := l.seq, l.head
	l.sinceCP = 0
	l.lastCP = l.opts.Now()
	l.mu.Unlock()

	st, err := l.opts.Stamper.Stamp(ctx, stampDigest(head[:]))

	l.mu.Lock()
	defer l.mu.Unlock()
	l.stamping = false
	if err != nil {
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	if l.closed && l.f == nil {
		return errors.New("audit: log is closed")
	}
	r := Record{Event: "checkpoint", Time: l.opts.Now().UTC(), Covers: covers, Head: hex.EncodeToString(head[:]), Stamp: st}
	if err := l.appendLocked(r); err != nil {
		return err
	}
	if err := l.f.Sync(); err != nil {
		l.fail(err)
		return l.failed
	}
	r.Seq, r.Prev = l.seq, "" // the anchor names the record; its chain is the log's
	return writeAnchor(l.dir, r)
}

// Close writes a "stop" record and a last checkpoint, and closes the file.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.appendLocked(Record{Event: "stop"})
	l.mu.Unlock()
	close(l.done)
	l.wg.Wait()
	l.mu.Lock()
	l.closed = false // let the last checkpoint through
	l.mu.Unlock()
	cerr := l.Checkpoint(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	ferr := l.f.Close()
	l.f = nil
	return errors.Join(err, cerr, ferr)
}

// stampDigest is the qualifyingData of a checkpoint's stamp.
func stampDigest(head []byte) []byte {
	h := sha256.New()
	h.Write([]byte(stampDomain))
	h.Write(head)
	return h.Sum(nil)
}

// writeAnchor replaces dir/audit.anchor with r, atomically.
func writeAnchor(dir string, r Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".anchor-*")
	if err != nil {
		return fmt.Errorf("audit: anchor: %w", err)
	}
	_, werr := tmp.Write(append(data, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("audit: anchor: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, AnchorFile)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("audit: anchor: %w", err)
	}
	return nil
}

// rotatedNumber returns N for a file named audit.log.N.
func rotatedNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, CurrentFile+".")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0 && strconv.Itoa(n) == s
}

// logFiles returns the log's files, oldest first: audit.log.N by N, then
// audit.log if it exists.
func logFiles(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	type numbered struct {
		n    int
		path string
	}
	var rotated []numbered
	current := ""
	for _, de := range des {
		if n, ok := rotatedNumber(de.Name()); ok {
			rotated = append(rotated, numbered{n, filepath.Join(dir, de.Name())})
		} else if de.Name() == CurrentFile {
			current = filepath.Join(dir, de.Name())
		}
	}
	sort.Slice(rotated, func(i, j int) bool { return rotated[i].n < rotated[j].n })
	var out []string
	for _, r := range rotated {
		out = append(out, r.path)
	}
	if current != "" {
		out = append(out, current)
	}
	return out, nil
}

// lastLine returns the last complete line of a file.
func lastLine(path string) ([]byte, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	var last []byte
	found := false
	err = eachLine(f, func(line []byte) error {
		last, found = append(last[:0], line...), true
		return nil
	})
	return last, found, err
}

// eachLine calls fn with each newline-terminated line of r (without the
// newline). A final line without newline is an error: a record cut short.
func eachLine(r io.Reader, fn func([]byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if err := fn(bytes.TrimSuffix(line, []byte("\n"))); err != nil {
				return err
			}
		case errors.Is(err, io.EOF):
			if len(line) > 0 {
				return errCutShort
			}
			return nil
		case errors.Is(err, bufio.ErrBufferFull):
			return fmt.Errorf("audit: a line longer than %d bytes", maxLine)
		default:
			return err
		}
	}
}

var errCutShort = errors.New("the last record is cut short (no newline)")
