package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/icn/icn-agent/attest"
)

// ErrTampered means the log is not the one the agent wrote: a record was
// edited, inserted, deleted, reordered or cut. The error is a *BadRecord.
var ErrTampered = errors.New("audit: the log has been tampered with")

// BadRecord names the first record where the log stops being what the
// agent wrote.
type BadRecord struct {
	File   string
	Line   int    // 1-based, within File
	Seq    uint64 // the seq the record claims (0 if unreadable)
	Reason string
}

func (b *BadRecord) Error() string {
	return fmt.Sprintf("audit: %s line %d (record %d): %s", b.File, b.Line, b.Seq, b.Reason)
}

func (b *BadRecord) Is(target error) bool { return target == ErrTampered }

// Report is what Verify found in an intact log.
type Report struct {
	Records     uint64 // records read
	Checkpoints int
	// LastCheckpoint is the seq of the last record a checkpoint covers
	// (0 if none), and LastCheckpointClock the TPM clock of its stamp.
	LastCheckpoint      uint64
	LastCheckpointClock uint64
	// Unanchored is how many records (checkpoints aside) follow the last
	// record a checkpoint covers: nothing the TPM signed vouches for them
	// yet.
	Unanchored uint64
	// AKName is the attestation key that signed the checkpoints.
	AKName []byte
}

// Verify reads every file of the log in dir, oldest first, and checks the
// chain (each record's prev is the hash of the line before it, seqs count
// up by one), every checkpoint (its head is the hash of the record it
// covers, its stamp a TPM stamp of that head by the same attestation key
// throughout, the one named trustedAK if not nil) and the anchor (the log
// reaches the anchored checkpoint, with the same content). It returns a
// *BadRecord (ErrTampered) naming the first record that is not what the
// agent wrote.
func Verify(dir string, trustedAK []byte) (*Report, error) {
	files, err := logFiles(dir)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	var prev [sha256.Size]byte
	hashes := map[uint64][sha256.Size]byte{}
	var checkpointLines = map[uint64][]byte{}
	var lastFile string
	var lastLineNo int
	prevFile, prevLine := "", 0
	after := uint64(0) // records, checkpoints aside, after the last one a checkpoint covers
	isCheckpoint := map[uint64]bool{}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		name := filepath.Base(path)
		lineNo := 0
		err = eachLine(f, func(line []byte) error {
			lineNo++
			bad := func(seq uint64, format string, args ...any) error {
				return &BadRecord{File: name, Line: lineNo, Seq: seq, Reason: fmt.Sprintf(format, args...)}
			}
			var r Record
			if err := json.Unmarshal(line, &r); err != nil {
				return bad(0, "not a record: %v", err)
			}
			if r.Seq != rep.Records+1 {
				return bad(r.Seq, "record %d where %d was due: records were deleted, inserted or reordered", r.Seq, rep.Records+1)
			}
			if r.Prev != hex.EncodeToString(prev[:]) {
				if r.Seq == 1 {
					return bad(r.Seq, "the first record does not start the chain: records before it were removed")
				}
				return &BadRecord{File: prevFile, Line: prevLine, Seq: r.Seq - 1,
					Reason: fmt.Sprintf("its hash is not the one record %d names: it was edited (or record %d was)", r.Seq, r.Seq)}
			}
			if r.Event == "checkpoint" {
				if err := checkCheckpoint(&r, hashes, trustedAK, rep); err != nil {
					return bad(r.Seq, "%v", err)
				}
				checkpointLines[r.Seq] = bytes.Clone(line)
			}
			if r.Event == "checkpoint" {
				// Records after the one it covers, checkpoints aside,
				// are not yet vouched for.
				after = 0
				for seq := r.Covers + 1; seq < r.Seq; seq++ {
					if !isCheckpoint[seq] {
						after++
					}
				}
				isCheckpoint[r.Seq] = true
			} else {
				after++
			}
			prev = sha256.Sum256(line)
			hashes[r.Seq] = prev
			rep.Records = r.Seq
			prevFile, prevLine = name, lineNo
			return nil
		})
		f.Close()
		if errors.Is(err, errCutShort) {
			return nil, &BadRecord{File: name, Line: lineNo + 1, Seq: rep.Records + 1, Reason: err.Error()}
		}
		if err != nil {
			return nil, err
		}
		lastFile, lastLineNo = name, lineNo
	}
	if err := checkAnchor(dir, checkpointLines, rep); err != nil {
		return nil, &BadRecord{File: lastFile, Line: lastLineNo + 1, Seq: rep.Records + 1, Reason: err.Error()}
	}
	rep.Unanchored = after
	return rep, nil
}

// checkCheckpoint checks a checkpoint record against the hashes of the
// records before it.
func checkCheckpoint(r *Record, hashes map[uint64][sha256.Size]byte, trustedAK []byte, rep *Report) error {
	h, ok := hashes[r.Covers]
	if !ok || r.Covers < rep.LastCheckpoint {
		return fmt.Errorf("a checkpoint of record %d, which is not before it in order", r.Covers)
	}
	if r.Head != hex.EncodeToString(h[:]) {
		return fmt.Errorf("the checkpoint's head is not the hash of record %d: that record was edited", r.Covers)
	}
	ak := trustedAK
	if ak == nil {
		ak = rep.AKName // the first checkpoint's key signs them all
	}
	info, err := attest.VerifyStamp(r.Stamp, stampDigest(h[:]), ak)
	if err != nil {
		return fmt.Errorf("the checkpoint's TPM stamp: %v", err)
	}
	if rep.Checkpoints > 0 && info.Clock < rep.LastCheckpointClock && info.ResetCount == 0 {
		return errors.New("the checkpoint's TPM clock is before the previous one's")
	}
	rep.AKName = info.AKName
	rep.Checkpoints++
	rep.LastCheckpoint = r.Covers
	rep.LastCheckpointClock = info.Clock
	return nil
}

// checkAnchor checks that the log reaches the checkpoint audit.anchor
// names, and holds the same one.
func checkAnchor(dir string, checkpointLines map[uint64][]byte, rep *Report) error {
	data, err := os.ReadFile(filepath.Join(dir, AnchorFile))
	if errors.Is(err, os.ErrNotExist) {
		if rep.Checkpoints > 0 {
			return errors.New("the anchor file is missing, though the log has checkpoints")
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("anchor: %w", err)
	}
	var a Record
	if err := json.Unmarshal(bytes.TrimSpace(data), &a); err != nil {
		return fmt.Errorf("anchor: %v", err)
	}
	line, ok := checkpointLines[a.Seq]
	if !ok {
		return fmt.Errorf("the log ends before checkpoint record %d, the last one the agent wrote: it was cut short", a.Seq)
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return err
	}
	r.Prev = ""
	want, _ := json.Marshal(r)
	got, _ := json.Marshal(a)
	if !bytes.Equal(want, got) {
		return fmt.Errorf("checkpoint record %d differs from the anchored one", a.Seq)
	}
	return nil
}

// Read calls fn with each record of the log in dir from since on, oldest
// first, without verifying the chain (see Verify).
func Read(dir string, since time.Time, fn func(Record) error) error {
	files, err := logFiles(dir)
	if err != nil {
		return err
	}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		err = eachLine(f, func(line []byte) error {
			var r Record
			if err := json.Unmarshal(line, &r); err != nil {
				return fmt.Errorf("audit: %s: %w", filepath.Base(path), err)
			}
			if r.Time.Before(since) {
				return nil
			}
			return fn(r)
		})
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
