package tpmdev

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

func TestParseSpec(t *testing.T) {
	_, statErr := os.Stat(DefaultDevice)
	tests := []struct {
		in      string
		want    Spec
		wantErr string
	}{
		{in: "sim", want: Spec{Kind: KindSim}},
		{in: " sim ", want: Spec{Kind: KindSim}},
		{in: "/dev/tpmrm0", want: Spec{Kind: KindDevice, Path: "/dev/tpmrm0"}},
		{in: "/dev/tpm0", want: Spec{Kind: KindDevice, Path: "/dev/tpm0"}},
		{in: "swtpm:unix:/run/swtpm/sock", want: Spec{Kind: KindSwtpmUnix, Path: "/run/swtpm/sock"}},
		{in: "swtpm:tcp:127.0.0.1:2321", want: Spec{Kind: KindSwtpmTCP, Addr: "127.0.0.1:2321"}},
		{in: "swtpm:tcp:[::1]:2321", want: Spec{Kind: KindSwtpmTCP, Addr: "[::1]:2321"}},
		{in: "swtpm:unix:", wantErr: "missing socket path"},
		{in: "swtpm:tcp:localhost", wantErr: "want swtpm:tcp:HOST:PORT"},
		{in: "swtpm:tcp::2321", wantErr: "want swtpm:tcp:HOST:PORT"},
		{in: "tpm0", wantErr: "unknown TPM spec"},
		{in: "swtpm:serial:x", wantErr: "unknown TPM spec"},
	}
	if statErr != nil {
		tests = append(tests, struct {
			in      string
			want    Spec
			wantErr string
		}{in: "auto", wantErr: "--tpm sim"})
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSpec(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSpec(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if again, err := ParseSpec(got.String()); err != nil || again != got {
				t.Fatalf("ParseSpec(String()) = %+v, %v; want %+v", again, err, got)
			}
		})
	}
}

func TestAutoWithoutDeviceNamesSim(t *testing.T) {
	if _, err := os.Stat(DefaultDevice); err == nil {
		t.Skip("this machine has a TPM device: auto selects it")
	}
	_, err := ParseSpec("auto")
	if !errors.Is(err, ErrNoTPM) || !strings.Contains(err.Error(), "--tpm sim") {
		t.Fatalf("ParseSpec(auto) = %v; want ErrNoTPM naming --tpm sim", err)
	}
}

func TestOpenMissingDevice(t *testing.T) {
	_, err := Open(context.Background(), Spec{Kind: KindDevice, Path: filepath.Join(t.TempDir(), "tpmrm0")}, Options{})
	if !errors.Is(err, ErrNoTPM) || !strings.Contains(err.Error(), "--tpm sim") {
		t.Fatalf("Open(missing device) = %v; want ErrNoTPM naming --tpm sim", err)
	}
}

func TestOpenSwtpmNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nothing")
	_, err := Open(context.Background(), Spec{Kind: KindSwtpmUnix, Path: sock}, Options{CommandTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "is swtpm running?") {
		t.Fatalf("Open(swtpm not running) = %v; want a connect error", err)
	}
}

// response builds a bare TPM response with the given code.
func response(rc tpm2.TPMRC) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint16(b[0:2], uint16(tpm2.TPMSTNoSessions))
	binary.BigEndian.PutUint32(b[2:6], 10)
	binary.BigEndian.PutUint32(b[6:10], uint32(rc))
	return b
}

type scripted struct {
	rcs   []tpm2.TPMRC
	calls int
}

func (s *scripted) Send([]byte) ([]byte, error) {
	rc := s.rcs[min(s.calls, len(s.rcs)-1)]
	s.calls++
	return response(rc), nil
}

func TestRetrier(t *testing.T) {
	tests := []struct {
		name      string
		rcs       []tpm2.TPMRC
		wantCalls int
		wantRC    tpm2.TPMRC
	}{
		{"success", []tpm2.TPMRC{tpm2.TPMRCSuccess}, 1, tpm2.TPMRCSuccess},
		{"retry then success", []tpm2.TPMRC{tpm2.TPMRCRetry, tpm2.TPMRCRetry, tpm2.TPMRCSuccess}, 3, tpm2.TPMRCSuccess},
		{"yielded then success", []tpm2.TPMRC{tpm2.TPMRCYielded, tpm2.TPMRCSuccess}, 2, tpm2.TPMRCSuccess},
		{"testing then success", []tpm2.TPMRC{tpm2.TPMRCTesting, tpm2.TPMRCSuccess}, 2, tpm2.TPMRCSuccess},
		{"retry forever is bounded", []tpm2.TPMRC{tpm2.TPMRCRetry}, 4, tpm2.TPMRCRetry},
		{"lockout is not retried", []tpm2.TPMRC{tpm2.TPMRCLockout, tpm2.TPMRCSuccess}, 1, tpm2.TPMRCLockout},
		{"policy failure is not retried", []tpm2.TPMRC{tpm2.TPMRCPolicyFail, tpm2.TPMRCSuccess}, 1, tpm2.TPMRCPolicyFail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scripted{rcs: tt.rcs}
			var slept []time.Duration
			r := &retrier{next: s, attempts: 4, backoff: time.Millisecond, sleep: func(d time.Duration) { slept = append(slept, d) }}
			rsp, err := r.Send(make([]byte, 10))
			if err != nil {
				t.Fatal(err)
			}
			if got := ResponseCode(rsp); got != tt.wantRC || s.calls != tt.wantCalls {
				t.Fatalf("rc %v after %d calls; want %v after %d", got, s.calls, tt.wantRC, tt.wantCalls)
			}
			for i := 1; i < len(slept); i++ {
				if slept[i] != 2*slept[i-1] {
					t.Fatalf("backoff %v is not doubling", slept)
				}
			}
		})
	}
}

type hanging struct {
	release chan struct{}
	calls   atomic.Int32
}

func (h *hanging) Send([]byte) ([]byte, error) {
	h.calls.Add(1)
	<-h.release
	return response(tpm2.TPMRCSuccess), nil
}

func TestGuardTimesOutAndRecovers(t *testing.T) {
	h := &hanging{release: make(chan struct{})}
	g := &guard{next: h, timeout: 50 * time.Millisecond}
	if _, err := g.Send(make([]byte, 10)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("hung command: %v; want ErrTimeout", err)
	}
	// While the hung command is pending, later commands fail fast.
	if _, err := g.Send(make([]byte, 10)); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "still pending") {
		t.Fatalf("second command: %v; want fast ErrTimeout", err)
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("%d commands reached the TPM while one was pending; want 1", n)
	}
	close(h.release)
	g.mu.Lock()
	stuck := g.stuck
	g.mu.Unlock()
	<-stuck
	if _, err := g.Send(make([]byte, 10)); err != nil {
		t.Fatalf("after the TPM answered: %v", err)
	}
}

func TestGuardHonoursContext(t *testing.T) {
	h := &hanging{release: make(chan struct{})}
	defer close(h.release)
	g := &guard{next: h, timeout: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	g.setContext(ctx)
	if _, err := g.Send(make([]byte, 10)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Send past the context deadline: %v; want ErrTimeout", err)
	}
}

type counting struct {
	next transport.TPM
	cc   map[tpm2.TPMCC]int
}

func (c *counting) Send(cmd []byte) ([]byte, error) {
	c.cc[CommandCode(cmd)]++
	return c.next.Send(cmd)
}

func openSimT(t *testing.T, c *counting) *TPM {
	t.Helper()
	opts := Options{StateDir: t.TempDir()}
	if c != nil {
		opts.Wrap = func(next transport.TPM) transport.TPM { c.next = next; return c }
	}
	tpm, err := Open(context.Background(), Spec{Kind: KindSim}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

func TestSRKCreatedOncePerProcess(t *testing.T) {
	c := &counting{cc: map[tpm2.TPMCC]int{}}
	tpm := openSimT(t, c)
	var first tpm2.TPM2BName
	for i := 0; i < 5; i++ {
		err := tpm.RunWithSRK(context.Background(), func(_ transport.TPM, srk *SRK) error {
			if i == 0 {
				first = srk.Name
			} else if string(srk.Name.Buffer) != string(first.Buffer) {
				t.Errorf("SRK name changed")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := c.cc[tpm2.TPMCCCreatePrimary]; n != 1 {
		t.Fatalf("CreatePrimary ran %d times; want 1", n)
	}
}

func TestPersistentSRKIsUsed(t *testing.T) {
	c := &counting{cc: map[tpm2.TPMCC]int{}}
	tpm := openSimT(t, c)
	var created tpm2.TPM2BName
	err := tpm.RunWithSRK(context.Background(), func(tp transport.TPM, srk *SRK) error {
		created = srk.Name
		_, err := tpm2.EvictControl{
			Auth:             tpm2.TPMRHOwner,
			ObjectHandle:     &tpm2.NamedHandle{Handle: srk.Handle, Name: srk.Name},
			PersistentHandle: PersistentSRK,
		}.Execute(tp)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tpm.lock(context.Background())
	tpm.srk = nil // as a new process would
	tpm.unlock()
	err = tpm.RunWithSRK(context.Background(), func(_ transport.TPM, srk *SRK) error {
		if !srk.Persistent || srk.Handle != PersistentSRK || string(srk.Name.Buffer) != string(created.Buffer) {
			t.Errorf("SRK = %+v; want the persistent one", srk)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := c.cc[tpm2.TPMCCCreatePrimary]; n != 1 {
		t.Fatalf("CreatePrimary ran %d times; want 1 (the persistent SRK is reused)", n)
	}
}

func TestOtherKeyAtPersistentHandleIsIgnored(t *testing.T) {
	tpm := openSimT(t, nil)
	err := tpm.Run(context.Background(), func(tp transport.TPM) error {
		tmpl := tpm2.ECCSRKTemplate
		tmpl.ObjectAttributes.NoDA = false // not the TCG template
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tp)
		if err != nil {
			return err
		}
		defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp)
		_, err = tpm2.EvictControl{
			Auth:             tpm2.TPMRHOwner,
			ObjectHandle:     &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
			PersistentHandle: PersistentSRK,
		}.Execute(tp)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = tpm.RunWithSRK(context.Background(), func(_ transport.TPM, srk *SRK) error {
		if srk.Persistent {
			t.Errorf("a non-template key at 0x81000001 was used as SRK")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSRKReloadedAfterReboot(t *testing.T) {
	tpm := openSimT(t, nil)
	var before tpm2.TPM2BName
	if err := tpm.RunWithSRK(context.Background(), func(_ transport.TPM, srk *SRK) error { before = srk.Name; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := tpm.SimulateReboot(); err != nil {
		t.Fatal(err)
	}
	err := tpm.RunWithSRK(context.Background(), func(tp transport.TPM, srk *SRK) error {
		if string(srk.Name.Buffer) != string(before.Buffer) {
			t.Errorf("SRK changed across a reboot")
		}
		_, err := tpm2.ReadPublic{ObjectHandle: srk.Handle}.Execute(tp)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStaleSRKHandleIsReloaded(t *testing.T) {
	tpm := openSimT(t, nil)
	if err := tpm.RunWithSRK(context.Background(), func(tp transport.TPM, srk *SRK) error {
		// Another client flushes our SRK behind our back.
		_, err := tpm2.FlushContext{FlushHandle: srk.Handle}.Execute(tp)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	err := tpm.RunWithSRK(context.Background(), func(tp transport.TPM, srk *SRK) error {
		calls++
		_, err := tpm2.ReadPublic{ObjectHandle: srk.Handle}.Execute(tp)
		return err
	})
	if err != nil || calls != 2 {
		t.Fatalf("RunWithSRK after the SRK was flushed: err %v after %d calls; want success on the second", err, calls)
	}
}

// Without internal/tpmsim linked in, KindSim fails with a sentinel that
// says so.
func TestSimNotLinkedIn(t *testing.T) {
	saved := simOpener()
	RegisterSimulator(nil)
	t.Cleanup(func() { RegisterSimulator(saved) })
	_, err := Open(context.Background(), Spec{Kind: KindSim}, Options{StateDir: t.TempDir()})
	if !errors.Is(err, ErrNoSimulator) || !strings.Contains(err.Error(), "built without the simulator") {
		t.Fatalf("Open(sim) without a simulator = %v; want ErrNoSimulator", err)
	}
}

func TestSimSameSeedSameSRK(t *testing.T) {
	dir := t.TempDir()
	name := func() string {
		tpm, err := Open(context.Background(), Spec{Kind: KindSim}, Options{StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer tpm.Close()
		var n string
		if err := tpm.RunWithSRK(context.Background(), func(_ transport.TPM, srk *SRK) error { n = string(srk.Name.Buffer); return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if a, b := name(), name(); a != b {
		t.Fatalf("SRK differs between two simulator instances with the same seed file")
	}
}

func TestReadPCRsAcrossBatches(t *testing.T) {
	tpm := openSimT(t, nil)
	all := make([]int, NumPCRs)
	for i := range all {
		all[i] = i
	}
	err := tpm.Run(context.Background(), func(tp transport.TPM) error {
		if err := ExtendPCR(tp, 16, []byte("x")); err != nil {
			return err
		}
		values, _, err := ReadPCRs(tp, tpm2.TPMAlgSHA256, all)
		if err != nil {
			return err
		}
		if len(values) != NumPCRs {
			t.Fatalf("read %d PCRs; want %d", len(values), NumPCRs)
		}
		one, _, err := ReadPCRs(tp, tpm2.TPMAlgSHA256, []int{16})
		if err != nil {
			return err
		}
		if string(one[0]) != string(values[16]) || string(values[16]) == string(values[15]) {
			t.Fatalf("PCR 16 read inconsistently")
		}
		if _, _, err := ReadPCRs(tp, tpm2.TPMAlgSHA256, []int{7, 0}); err == nil {
			t.Fatalf("unsorted indexes accepted")
		}
		if _, _, err := ReadPCRs(tp, tpm2.TPMAlgSHA256, []int{24}); err == nil {
			t.Fatalf("PCR 24 accepted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A stale handle that is not the SRK's (a flushed sealed object, say) is
// the caller's error: the SRK is neither created again nor retried with.
func TestStaleOtherHandleKeepsSRK(t *testing.T) {
	c := &counting{cc: map[tpm2.TPMCC]int{}}
	tpm := openSimT(t, c)
	calls := 0
	err := tpm.RunWithSRK(context.Background(), func(tp transport.TPM, _ *SRK) error {
		calls++
		tmpl := tpm2.ECCSRKTemplate
		tmpl.ObjectAttributes.NoDA = false // another primary key
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tp)
		if err != nil {
			return err
		}
		if _, err := (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(tp); err != nil {
			return err
		}
		_, err = tpm2.ReadPublic{ObjectHandle: rsp.ObjectHandle}.Execute(tp)
		return err
	})
	if !IsStaleHandle(err) || calls != 1 {
		t.Fatalf("RunWithSRK = %v after %d calls; want the stale-handle error after 1", err, calls)
	}
	if n := c.cc[tpm2.TPMCCCreatePrimary]; n != 2 {
		t.Fatalf("CreatePrimary ran %d times; want 2 (the SRK once, the test's key once)", n)
	}
}

// An owner password stops the agent creating its storage root key: the
// error says so with ErrOwnerAuth (the command adds how to provision a
// persistent one), and the TPM's own code stays visible.
func TestOwnerPasswordIsErrOwnerAuth(t *testing.T) {
	tpm := openSimT(t, nil)
	err := tpm.Run(context.Background(), func(tp transport.TPM) error {
		_, err := tpm2.HierarchyChangeAuth{
			AuthHandle: tpm2.TPMRHOwner,
			NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("owner password")},
		}.Execute(tp)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = tpm.RunWithSRK(context.Background(), func(transport.TPM, *SRK) error { return nil })
	if !errors.Is(err, ErrOwnerAuth) || !errors.Is(err, tpm2.TPMRCBadAuth) && !errors.Is(err, tpm2.TPMRCAuthFail) {
		t.Fatalf("RunWithSRK with an owner password: %v, want ErrOwnerAuth and the TPM's code", err)
	}
}
