package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/icn/icn-agent/agentsrv"
	"github.com/icn/icn-agent/internal/audit"
	"github.com/icn/icn-agent/sealstore"
)

// seedUnsealer unseals every identity to one seed.
type seedUnsealer []byte

func (s seedUnsealer) Unseal(_ context.Context, _ *sealstore.Blob, dst []byte) error {
	copy(dst, s)
	return nil
}

// startBenchAgent serves one sealed identity on a fresh socket with the
// given auditor (nil: none) and returns the socket and the key.
func startBenchAgent(b testing.TB, aud agentsrv.Auditor) (string, ssh.PublicKey) {
	seed := sha256.Sum256([]byte("bench"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	pub, _ := ssh.NewPublicKey(priv.Public())
	cfg := agentsrv.Config{Unsealer: seedUnsealer(seed[:]), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AutoLockTimeout: time.Hour}
	if aud != nil {
		cfg.Audit = aud
	}
	srv := agentsrv.New(cfg)
	if err := srv.SetIdentities([]agentsrv.Identity{{Blob: &sealstore.Blob{Name: "id", PublicKey: pub}}}); err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "icnb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(context.Background(), l); close(done) }()
	b.Cleanup(func() { srv.Close(); <-done })
	return path, pub
}

// BenchmarkSignAudit compares a warm signature through the socket with
// the audit log off and on (the agent's sink over internal/audit, no
// TPM stamps): the log must cost no more than 10%.
func BenchmarkSignAudit(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			var sink *auditSink
			if on {
				var err error
				if sink, err = openAuditLog(b.TempDir(), nil, slog.New(slog.DiscardHandler)); err != nil {
					b.Fatal(err)
				}
			}
			var aud agentsrv.Auditor
			if sink != nil {
				aud = sink
			}
			path, pub := startBenchAgent(b, aud)
			c, err := net.Dial("unix", path)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			a := agent.NewClient(c)
			data := make([]byte, 256)
			if _, err := a.Sign(pub, data); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := a.Sign(pub, data); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if sink != nil {
				c.Close()
				b.Cleanup(func() { sink.Close(time.Second) })
			}
		})
	}
}

// TestAuditSink: events reach the log as records that verify, refusals
// as "refuse", with the peer.
func TestAuditSink(t *testing.T) {
	dir := t.TempDir()
	sink, err := openAuditLog(dir, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	path, pub := startBenchAgent(t, sink)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	a := agent.NewClient(c)
	if _, err := a.Sign(pub, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	otherPub, _ := ssh.NewPublicKey(other)
	if _, err := a.Sign(otherPub, []byte("hello")); err == nil {
		t.Fatal("signed with an unknown key")
	}
	c.Close()
	// Close the server (the cleanup of startBenchAgent runs later), then
	// the sink: here, by closing it after the requests were answered.
	if err := sink.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(dir, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	exe, _ := os.Executable()
	audit.Read(dir, time.Time{}, func(r audit.Record) error {
		if r.Event == "sign" || r.Event == "refuse" {
			got = append(got, r.Event+" "+r.Name+" "+r.Outcome)
			if r.PeerExe != exe || r.PeerPID != os.Getpid() || r.PeerUID == nil || r.DataSHA256 == "" {
				t.Errorf("record %+v: want peer %s pid %d", r, exe, os.Getpid())
			}
		}
		return nil
	})
	want := "sign id signed|refuse  refused: unknown key"
	if strings.Join(got, "|") != want {
		t.Errorf("records %q, want %q", strings.Join(got, "|"), want)
	}
}
