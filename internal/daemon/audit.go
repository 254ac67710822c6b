package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/audit"
	"github.com/icn/icn-agent/internal/notify"
)

// The agent's audit log: every sign request the agent answers, signed or
// refused, goes to internal/audit in the state directory, with
// checkpoints stamped by the TPM's attestation key (the one icn-agent
// attest uses). The log is on unless the config says audit = false.
//
// The server hands events over on the request path (agentsrv.Auditor);
// auditSink queues them and one goroutine appends them, so that a
// signature waits for a channel send, not for a write. The queue is
// bounded: if the disk falls that far behind, signatures wait for room
// rather than go unrecorded. Checkpoints are stamped in the log's own
// goroutine, each TPM use bounded by tpm_timeout_secs; a signature never
// waits for the TPM on their account.

// ErrAuditLog means the audit log could not be opened; the agent does not
// serve without it unless the config turns it off.
var ErrAuditLog = errors.New("cannot open the audit log")

// auditQueue is how many events may wait to be written.
const auditQueue = 4096

// auditBatch is how long the writer lets events gather after writing
// some: a send to a writer that is parked wakes it, which costs the
// signing thread more than the send, so a busy agent wakes its writer at
// most once per auditBatch. Records reach the file at most that late.
const auditBatch = time.Millisecond

// auditMaxBatch bounds how many records one write carries.
const auditMaxBatch = 256

// auditSink is the agent's agentsrv.Auditor.
type auditSink struct {
	log  *audit.Log
	ch   chan agentsrv.SignEvent
	done chan struct{}
}

// openAuditLog opens the log in dir, stamping checkpoints with stamper
// (nil: none), and starts its writer.
func openAuditLog(dir string, stamper audit.Stamper, log *slog.Logger) (*auditSink, error) {
	l, err := audit.Open(dir, audit.Options{Stamper: stamper, Logger: log})
	if err != nil {
		return nil, err
	}
	a := &auditSink{log: l, ch: make(chan agentsrv.SignEvent, auditQueue), done: make(chan struct{})}
	go a.run()
	return a, nil
}

// Audit implements agentsrv.Auditor.
func (a *auditSink) Audit(ev *agentsrv.SignEvent) { a.ch <- *ev }

func (a *auditSink) run() {
	defer close(a.done)
	batch := make([]audit.Record, 0, auditMaxBatch)
	for ev := range a.ch {
		batch = append(batch[:0], auditRecord(&ev))
		closed := false
	gather:
		for len(batch) < auditMaxBatch {
			select {
			case ev, ok := <-a.ch:
				if !ok {
					closed = true
					break gather
				}
				batch = append(batch, auditRecord(&ev))
			default:
				break gather
			}
		}
		// One write for the batch; a failing log reports itself once
		// (audit.Log.fail).
		a.log.AppendAll(batch)
		if closed {
			return
		}
		time.Sleep(auditBatch)
	}
}

// Close writes what is queued, then the log's stop record and its last
// checkpoint. The server must be closed first: no Audit may follow.
func (a *auditSink) Close(timeout time.Duration) error {
	close(a.ch)
	<-a.done
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return a.log.Close(ctx)
}

// auditRecord is the log's record of an event.
func auditRecord(ev *agentsrv.SignEvent) audit.Record {
	r := audit.Record{
		Time:       ev.Time.UTC(),
		Event:      "sign",
		Key:        ev.Key,
		Name:       ev.Name,
		Backend:    ev.Backend,
		Dest:       ev.Dest.String(),
		DataSHA256: hex.EncodeToString(ev.DataSHA256[:]),
		Outcome:    ev.Outcome,
	}
	if ev.Err != nil {
		r.Event = "refuse"
	}
	if p := ev.Peer; p.Known {
		uid := p.UID
		r.PeerUID, r.PeerPID, r.PeerExe = &uid, p.PID, p.Exe
	}
	return r
}

// control is what the agent adds to the server for control over each
// signature: the audit log, the notifier and the known_hosts lookup.
type control struct {
	audit     *auditSink       // nil when audit = false
	notify    *notify.Notifier // nil when there is nowhere to announce to
	auditor   agentsrv.Auditor
	notifier  agentsrv.Notifier
	knownHost func(ssh.PublicKey, agentsrv.Peer) string
}

// control opens the audit log (unless the config turns it off), stamping
// its checkpoints with stamper, and sets up the notifier and the
// known_hosts lookup.
func (a *Agent) control(stamper audit.Stamper) (*control, error) {
	c := &control{}
	if a.cfg.Audit {
		dir := a.opts.StateDir
		s, err := openAuditLog(dir, stamper, a.log)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAuditLog, err)
		}
		c.audit, c.auditor = s, s
		a.log.Info("audit log on", "dir", dir)
	}
	if n := notify.New(a.cfg.NotifyCommand, a.cfg.DesktopNotify, a.getenv, a.log); n != nil {
		c.notify, c.notifier = n, n
	}
	if files := KnownHostsFiles(a.getenv); files != nil {
		c.knownHost = agentsrv.KnownHostsLookup(files...)
	}
	return c, nil
}

// close closes the audit log: its last records and checkpoint. The
// server must be closed.
func (c *control) close(log *slog.Logger, timeout time.Duration) {
	if c.audit == nil {
		return
	}
	if err := c.audit.Close(2 * timeout); err != nil {
		log.Warn("audit log not closed cleanly", "err", err)
	}
}
