package audit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/attesttpm"
	"github.com/icn/icn-agent/internal/tpmdev"
)

// simStamper stamps with an attestation key on the in-process simulator,
// shared by the tests (the simulator is one per process).
type simStamper struct {
	tpm *tpmdev.TPM
	ak  *attesttpm.AK
}

func (s *simStamper) Stamp(ctx context.Context, digest []byte) (*attest.Stamp, error) {
	return s.ak.Stamp(ctx, s.tpm, digest)
}

var (
	stamperOnce sync.Once
	stamper     *simStamper
	stamperErr  error
)

func testStamper(t *testing.T) *simStamper {
	t.Helper()
	stamperOnce.Do(func() {
		dir, err := os.MkdirTemp("", "audit-sim")
		if err != nil {
			stamperErr = err
			return
		}
		tpm, err := tpmdev.Open(context.Background(), tpmdev.Spec{Kind: tpmdev.KindSim}, tpmdev.Options{StateDir: dir})
		if err != nil {
			stamperErr = err
			return
		}
		ak, err := attesttpm.LoadOrCreateAK(context.Background(), tpm, filepath.Join(dir, "ak.pem"))
		stamper, stamperErr = &simStamper{tpm: tpm, ak: ak}, err
	})
	if stamperErr != nil {
		t.Fatal(stamperErr)
	}
	return stamper
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// writeLog writes n sign records with a checkpoint after every 40 (called
// by hand, so the test decides where they fall), rotating files at
// maxSize, and closes the log (a stop record and a last checkpoint).
func writeLog(t *testing.T, dir string, n int, maxSize int64) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}
	l, err := Open(dir, Options{Stamper: testStamper(t), CheckpointEvery: 1 << 30, CheckpointAfter: time.Hour, MaxFileSize: maxSize, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	uid := 1000
	for i := range n {
		err := l.Append(Record{Event: "sign", Key: "SHA256:key", Name: "id", Backend: "sealed", PeerUID: &uid, PeerPID: 4242 + i,
			PeerExe: "/usr/bin/ssh", DataSHA256: fmt.Sprintf("%064x", i), Outcome: "signed"})
		if err != nil {
			t.Fatal(err)
		}
		if (i+1)%40 == 0 {
			if err := l.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// lines reads a log file's lines.
func lines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
}

func writeLines(t *testing.T, path string, ls []string) {
	t.Helper()
	s := strings.Join(ls, "")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rechain rewrites every record of the log in dir with edit applied, and
// makes the chain consistent again as an attacker without the TPM would:
// prevs and checkpoint heads recomputed, stamps kept.
func rechain(t *testing.T, dir string, edit func(*Record)) {
	t.Helper()
	files, err := logFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var prev [32]byte
	hashes := map[uint64]string{}
	for _, path := range files {
		var out []string
		for _, line := range lines(t, path) {
			var r Record
			if err := json.Unmarshal([]byte(strings.TrimSuffix(line, "\n")), &r); err != nil {
				t.Fatal(err)
			}
			edit(&r)
			r.Prev = fmt.Sprintf("%x", prev)
			if r.Event == "checkpoint" {
				r.Head = hashes[r.Covers]
			}
			b, _ := json.Marshal(r)
			prev = sha256.Sum256(b)
			hashes[r.Seq] = fmt.Sprintf("%x", prev)
			out = append(out, string(b)+"\n")
		}
		writeLines(t, path, out)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		data, err := os.ReadFile(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestLogVerifies(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 130, 0)
	rep, err := Verify(dir, testStamper(t).ak.Name())
	if err != nil {
		t.Fatal(err)
	}
	// start, 130 signs, 3 checkpoints, stop, last checkpoint.
	if rep.Records != 136 || rep.Checkpoints != 4 || rep.Unanchored != 1 {
		t.Fatalf("report %+v", rep)
	}
	// Another run appends to the same chain.
	writeLog(t, dir, 5, 0)
	if rep, err = Verify(dir, nil); err != nil || rep.Records != 136+8 {
		t.Fatalf("after a second run: %+v, %v", rep, err)
	}
	// Another AK pinned: the stamps are not trusted.
	if _, err := Verify(dir, make([]byte, 34)); !errors.Is(err, ErrTampered) {
		t.Fatalf("with another AK pinned: %v", err)
	}
}

// TestTamperingIsCaught edits, inserts, deletes, reorders and truncates
// records of a rotated log, and checks that Verify names the first record
// that is not what the agent wrote.
func TestTamperingIsCaught(t *testing.T) {
	orig := t.TempDir()
	writeLog(t, orig, 130, 8<<10) // about 25 records a file
	files, err := logFiles(orig)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("want several rotated files, got %d", len(files))
	}
	if _, err := Verify(orig, nil); err != nil {
		t.Fatalf("the untouched log: %v", err)
	}
	second := filepath.Base(files[1])
	type mutation func(t *testing.T, dir string)
	edit := func(file string, line int, from, to string) mutation {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, file)
			ls := lines(t, p)
			if !strings.Contains(ls[line-1], from) {
				t.Fatalf("%s line %d has no %q: %s", file, line, from, ls[line-1])
			}
			ls[line-1] = strings.Replace(ls[line-1], from, to, 1)
			writeLines(t, p, ls)
		}
	}
	tests := []struct {
		name     string
		mutate   mutation
		wantFile string
		wantLine int
	}{
		{"edit an outcome", edit(second, 3, `"signed"`, `"refused"`), second, 3},
		{"edit a pid", edit(second, 5, `"peer_pid":`, `"peer_pid":1`), second, 5},
		{"delete a record", func(t *testing.T, dir string) {
			p := filepath.Join(dir, second)
			ls := lines(t, p)
			writeLines(t, p, append(ls[:3:3], ls[4:]...))
		}, second, 4},
		{"insert a record", func(t *testing.T, dir string) {
			p := filepath.Join(dir, second)
			ls := lines(t, p)
			writeLines(t, p, append(ls[:3:3], append([]string{ls[2]}, ls[3:]...)...))
		}, second, 4},
		{"swap two records", func(t *testing.T, dir string) {
			p := filepath.Join(dir, second)
			ls := lines(t, p)
			ls[2], ls[3] = ls[3], ls[2]
			writeLines(t, p, ls)
		}, second, 3},
		{"delete a rotated file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, second))
		}, filepath.Base(files[2]), 1},
		{"truncate before the last checkpoint", func(t *testing.T, dir string) {
			p := filepath.Join(dir, CurrentFile)
			ls := lines(t, p)
			writeLines(t, p, ls[:1])
		}, CurrentFile, 2},
		{"delete the newest file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, CurrentFile))
		}, filepath.Base(files[len(files)-2]), -1},
		{"edit, then rewrite the chain after it", func(t *testing.T, dir string) {
			rechain(t, dir, func(r *Record) {
				if r.Seq == 28 {
					r.Outcome = "refused"
				}
			})
		}, "", 0},
		{"cut the last line short", func(t *testing.T, dir string) {
			p := filepath.Join(dir, CurrentFile)
			data, _ := os.ReadFile(p)
			os.WriteFile(p, data[:len(data)-10], 0o600)
		}, CurrentFile, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, orig)
			tt.mutate(t, dir)
			_, err := Verify(dir, nil)
			var bad *BadRecord
			if !errors.As(err, &bad) || !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify = %v, want a *BadRecord", err)
			}
			if tt.wantFile == "" {
				// A rewritten chain is consistent up to the first
				// checkpoint after the edit, whose stamp is of the
				// original head.
				if !strings.Contains(bad.Reason, "stamp") || bad.Seq < 28 {
					t.Errorf("caught at %v, want the first checkpoint after record 28", err)
				}
			} else if bad.File != tt.wantFile || (tt.wantLine > 0 && bad.Line != tt.wantLine) {
				t.Errorf("first bad record %s line %d, want %s line %d: %v", bad.File, bad.Line, tt.wantFile, tt.wantLine, err)
			}
			t.Log(err)
		})
	}
}

// signalStamper tells the test when the log asks for a stamp.
type signalStamper struct {
	Stamper
	asked chan struct{}
}

func (s *signalStamper) Stamp(ctx context.Context, digest []byte) (*attest.Stamp, error) {
	defer func() {
		select {
		case s.asked <- struct{}{}:
		default:
		}
	}()
	return s.Stamper.Stamp(ctx, digest)
}

// A checkpoint is due after CheckpointEvery records, written by the log's
// own goroutine.
func TestCheckpointEvery(t *testing.T) {
	dir := t.TempDir()
	st := &signalStamper{Stamper: testStamper(t), asked: make(chan struct{}, 1)}
	l, err := Open(dir, Options{Stamper: st, CheckpointEvery: 10, CheckpointAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// With the start record, the ninth makes ten since the last
	// checkpoint.
	for range 9 {
		if err := l.Append(Record{Event: "sign", Outcome: "signed"}); err != nil {
			t.Fatal(err)
		}
	}
	<-st.asked
	// Close waits for the checkpoint under way, then writes its own.
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var n int
	Read(dir, time.Time{}, func(r Record) error {
		if r.Event == "checkpoint" {
			n++
		}
		return nil
	})
	if n != 2 {
		t.Errorf("%d checkpoints, want 2 (one due, one at close)", n)
	}
	data, _ := os.ReadFile(filepath.Join(dir, AnchorFile))
	var a Record
	if err := json.Unmarshal(data, &a); err != nil || a.Event != "checkpoint" {
		t.Errorf("anchor %s: %v", data, err)
	}
	if _, err := Verify(dir, nil); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAppend is the cost a signature pays for its record.
func BenchmarkAppend(b *testing.B) {
	l, err := Open(b.TempDir(), Options{CheckpointEvery: 1 << 30, CheckpointAfter: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	uid := 1000
	r := Record{Event: "sign", Key: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", Name: "default", Backend: "sealed",
		PeerUID: &uid, PeerPID: 4242, PeerExe: "/usr/bin/ssh", DataSHA256: fmt.Sprintf("%064x", 1), Outcome: "signed"}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Append(r); err != nil {
			b.Fatal(err)
		}
	}
}
