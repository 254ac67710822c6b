package attesttpm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
	"github.com/icn/icn-agent/internal/swtpmtest"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/internal/tpmpolicy"
	"github.com/icn/icn-agent/sealstore"
	"github.com/icn/icn-agent/sealstore/tpmseal"
)

// Tests run against the in-process simulator and a real swtpm process,
// through the same tpmdev code path the daemon uses. The simulator is one
// global instance per process: no test here uses t.Parallel.
var kinds = []string{"sim", "swtpm"}

type fixture struct {
	t        testing.TB
	kind     string
	stateDir string
	sw       *swtpmtest.Instance
	wrap     func(transport.TPM) transport.TPM
	tpm      *tpmdev.TPM
}

func newFixture(t testing.TB, kind string) *fixture {
	t.Helper()
	f := &fixture{t: t, kind: kind, stateDir: t.TempDir()}
	if kind == "swtpm" {
		f.sw = swtpmtest.Start(t)
	}
	f.open()
	t.Cleanup(func() { f.tpm.Close() })
	return f
}

// open opens the TPM as a new process would.
func (f *fixture) open() {
	f.t.Helper()
	if f.tpm != nil {
		f.tpm.Close()
	}
	spec := tpmdev.Spec{Kind: tpmdev.KindSim}
	if f.sw != nil {
		var err error
		if spec, err = tpmdev.ParseSpec(f.sw.Spec()); err != nil {
			f.t.Fatal(err)
		}
	}
	tpm, err := tpmdev.Open(context.Background(), spec, tpmdev.Options{StateDir: f.stateDir, Wrap: f.wrap})
	if err != nil {
		f.t.Fatal(err)
	}
	f.tpm = tpm
}

// reboot power-cycles the TPM: PCRs reset, loaded objects gone.
func (f *fixture) reboot() {
	f.t.Helper()
	if f.sw != nil {
		f.sw.Restart(f.t)
		return
	}
	if err := f.tpm.SimulateReboot(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) extend(pcr int) {
	f.t.Helper()
	err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		return tpmdev.ExtendPCR(tpm, pcr, []byte("measured something new"))
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) readPCRs(pcrs []int) map[int][]byte {
	f.t.Helper()
	out := map[int][]byte{}
	err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		v, _, err := tpmdev.ReadPCRs(tpm, tpm2.TPMAlgSHA256, pcrs)
		for i, p := range pcrs {
			if err == nil {
				out[p] = v[i]
			}
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// handles counts the transient objects and sessions loaded in the TPM.
func (f *fixture) handles() (objects, sessions int) {
	f.t.Helper()
	err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
			rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tpm)
			if err != nil {
				return err
			}
			hs, err := rsp.CapabilityData.Data.Handles()
			if err != nil {
				return err
			}
			for _, h := range hs.Handle {
				switch h >> 24 {
				case 0x80:
					objects++
				case 0x02, 0x03:
					sessions++
				}
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return objects, sessions
}

func (f *fixture) ak(path string) *AK {
	f.t.Helper()
	if path == "" {
		path = filepath.Join(f.stateDir, "ak.pem")
	}
	ak, err := LoadOrCreateAK(context.Background(), f.tpm, path)
	if err != nil {
		f.t.Fatal(err)
	}
	return ak
}

// identity is a sealed identity whose seed the test also keeps, so that it
// can sign even when the TPM would no longer unseal it.
type identity struct {
	blob *sealstore.Blob
	seed []byte
}

func (f *fixture) seal(name string, pcrs []int) *identity {
	f.t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		f.t.Fatal(err)
	}
	b, err := tpmseal.Seal(context.Background(), f.tpm, seed, tpmseal.SealOptions{Name: name, PCRs: pcrs})
	if err != nil {
		f.t.Fatal(err)
	}
	return &identity{blob: b, seed: seed}
}

func (id *identity) subject() Subject {
	return Subject{
		PublicKey:     id.blob.PublicKey,
		SealedPublic:  id.blob.Public,
		SealedPrivate: id.blob.Private,
		PCRs:          id.blob.Policy.Indexes(),
	}
}

// unsealingSigner signs as the agent does: it unseals the seed from the
// TPM, signs and wipes it.
func unsealingSigner(tpm tpmseal.TPM, b *sealstore.Blob) func([]byte) ([]byte, error) {
	return func(msg []byte) ([]byte, error) {
		seed := make([]byte, sealstore.SeedSize)
		if err := tpmseal.Unseal(context.Background(), tpm, b, seed); err != nil {
			return nil, err
		}
		priv := ed25519.NewKeyFromSeed(seed)
		defer clear(priv)
		clear(seed)
		return ed25519.Sign(priv, msg), nil
	}
}

// seedSigner signs with a seed kept in memory, as an agent that unsealed
// the identity before its PCRs changed.
func seedSigner(seed []byte) func([]byte) ([]byte, error) {
	return func(msg []byte) ([]byte, error) {
		return ed25519.Sign(ed25519.NewKeyFromSeed(seed), msg), nil
	}
}

func newNonce(t testing.TB) []byte {
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestQuoteRoundTrip(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind)
			id := f.seal("work", []int{0, 7})
			ak := f.ak("")
			nonce := newNonce(t)
			e, err := ak.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{
				Nonce:     nonce,
				ExtraPCRs: []int{10, 1, 7},
				Sign:      unsealingSigner(f.tpm, id.blob),
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := []int{0, 1, 7, 10}; !slices.Equal(e.PCRs, want) {
				t.Errorf("quoted PCRs %v, want %v", e.PCRs, want)
			}
			if !slices.Equal(e.SealedPCRs, []int{0, 7}) {
				t.Errorf("sealed PCRs %v, want [0 7]", e.SealedPCRs)
			}
			current := f.readPCRs([]int{0, 1, 7, 10})
			res, err := attest.Verify(e, attest.VerifyOptions{
				Nonce:         nonce,
				IdentityKey:   id.blob.PublicKey,
				ExpectedPCRs:  current,
				TrustedAK:     ak.Public(),
				TrustedAKName: ak.Name(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if !res.AKPinned || !res.Certified || !res.SealedPolicyMatches {
				t.Errorf("result %+v: want pinned, certified, policy matching", res)
			}
			if !bytes.Equal(res.AKName, ak.Name()) || !bytes.Equal(res.Identity.Marshal(), id.blob.PublicKey.Marshal()) {
				t.Errorf("result names another AK or identity")
			}
			wantSealed, err := tpm2.Unmarshal[tpm2.TPM2BPublic](id.blob.Public)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.SealedName, objectName(t, wantSealed)) {
				t.Errorf("sealed name %x is not the blob's object", res.SealedName)
			}
			if !bytes.Equal(e.SealedPublic, id.blob.Public) {
				t.Errorf("evidence sealed public differs from the blob's")
			}
			if !bytes.Equal(e.SRKName, id.blob.SRKName) {
				t.Errorf("evidence SRK name %x, blob's %x", e.SRKName, id.blob.SRKName)
			}

			// Encodings round trip to identical evidence.
			fromSSH, err := attest.ParseSSH(e.MarshalSSH())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromSSH, e) {
				t.Errorf("SSH round trip changed the evidence:\n%+v\n%+v", fromSSH, e)
			}
			js, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var fromJSON attest.Evidence
			if err := json.Unmarshal(js, &fromJSON); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&fromJSON, e) {
				t.Errorf("JSON round trip changed the evidence:\n%+v\n%+v", &fromJSON, e)
			}
			if !bytes.Equal(fromJSON.MarshalSSH(), e.MarshalSSH()) {
				t.Errorf("JSON and SSH round trips differ")
			}

			// Everything loaded for the quote was flushed: only the SRK
			// and the AK stay.
			if objects, sessions := f.handles(); objects != 2 || sessions != 0 {
				t.Errorf("after quote: %d objects and %d sessions loaded; want 2 (SRK, AK) and 0", objects, sessions)
			}
			if err := ak.Unload(context.Background(), f.tpm); err != nil {
				t.Fatal(err)
			}
			if objects, _ := f.handles(); objects != 1 {
				t.Errorf("after Unload: %d objects loaded; want 1 (SRK)", objects)
			}
		})
	}
}

func TestQuoteFlushesOnEveryPath(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind)
			id := f.seal("work", []int{0, 7})
			ak := f.ak("")
			ctx := context.Background()
			// Load the AK once, so the count below is stable.
			if _, err := ak.Quote(ctx, f.tpm, id.subject(), QuoteRequest{Nonce: newNonce(t), Sign: seedSigner(id.seed)}); err != nil {
				t.Fatal(err)
			}
			other := f.seal("other", []int{0})
			corrupt := id.subject()
			corrupt.SealedPrivate = bytes.Clone(corrupt.SealedPrivate)
			corrupt.SealedPrivate[len(corrupt.SealedPrivate)-1] ^= 1
			mixed := id.subject()
			mixed.SealedPrivate = other.blob.Private
			for _, tc := range []struct {
				name string
				s    Subject
				req  QuoteRequest
			}{
				{"sign fails", id.subject(), QuoteRequest{Nonce: newNonce(t), Sign: func([]byte) ([]byte, error) { return nil, errors.New("agent is locked") }}},
				{"wrong signer", id.subject(), QuoteRequest{Nonce: newNonce(t), Sign: seedSigner(other.seed)}},
				{"corrupt private", corrupt, QuoteRequest{Nonce: newNonce(t), Sign: seedSigner(id.seed)}},
				{"private of another object", mixed, QuoteRequest{Nonce: newNonce(t), Sign: seedSigner(id.seed)}},
			} {
				for i := 0; i < 4; i++ { // more than a TPM's session or object slots
					if _, err := ak.Quote(ctx, f.tpm, tc.s, tc.req); err == nil {
						t.Fatalf("%s: Quote succeeded", tc.name)
					}
				}
				if objects, sessions := f.handles(); objects != 2 || sessions != 0 {
					t.Fatalf("%s: %d objects and %d sessions loaded; want 2 and 0", tc.name, objects, sessions)
				}
			}
		})
	}
}

func TestQuoteRejectsBadRequests(t *testing.T) {
	f := newFixture(t, "sim")
	id := f.seal("work", []int{0, 7})
	ak := f.ak("")
	rsaLike := id.subject()
	rsaLike.PublicKey = nil
	noPCRs := id.subject()
	noPCRs.PCRs = nil
	badPCR := id.subject()
	badPCR.PCRs = []int{0, 24}
	sign := seedSigner(id.seed)
	for _, tc := range []struct {
		name string
		s    Subject
		req  QuoteRequest
	}{
		{"short nonce", id.subject(), QuoteRequest{Nonce: make([]byte, 7), Sign: sign}},
		{"long nonce", id.subject(), QuoteRequest{Nonce: make([]byte, 65), Sign: sign}},
		{"no sign func", id.subject(), QuoteRequest{Nonce: newNonce(t)}},
		{"no public key", rsaLike, QuoteRequest{Nonce: newNonce(t), Sign: sign}},
		{"no sealing PCRs", noPCRs, QuoteRequest{Nonce: newNonce(t), Sign: sign}},
		{"PCR out of range", badPCR, QuoteRequest{Nonce: newNonce(t), Sign: sign}},
		{"extra PCR out of range", id.subject(), QuoteRequest{Nonce: newNonce(t), ExtraPCRs: []int{-1}, Sign: sign}},
		{"no sealed public", Subject{PublicKey: id.blob.PublicKey, SealedPrivate: id.blob.Private, PCRs: []int{0}}, QuoteRequest{Nonce: newNonce(t), Sign: sign}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ak.Quote(context.Background(), f.tpm, tc.s, tc.req); err == nil {
				t.Fatal("Quote succeeded")
			}
		})
	}
}

func TestPCRExtendedAfterSealing(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind)
			id := f.seal("work", []int{0, 7})
			ak := f.ak("")
			sealingTime := f.readPCRs([]int{0, 7})
			f.extend(7)
			current := f.readPCRs([]int{0, 7})
			nonce := newNonce(t)
			// The agent still holds the seed it unsealed before PCR 7
			// moved; the TPM would no longer unseal it.
			e, err := ak.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{Nonce: nonce, Sign: seedSigner(id.seed)})
			if err != nil {
				t.Fatal(err)
			}
			opts := attest.VerifyOptions{Nonce: nonce, TrustedAKName: ak.Name(), ExpectedPCRs: sealingTime}
			_, err = attest.Verify(e, opts)
			var pe *attest.UnexpectedPCRError
			if !errors.Is(err, attest.ErrUnexpectedPCR) || !errors.As(err, &pe) || !slices.Equal(pe.PCRs, []int{7}) {
				t.Fatalf("Verify with sealing-time PCRs = %v; want ErrUnexpectedPCR naming PCR 7", err)
			}
			opts.ExpectedPCRs = current
			res, err := attest.Verify(e, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Certified || res.SealedPolicyMatches {
				t.Fatalf("certified %v, policy matches %v; want certified and not matching", res.Certified, res.SealedPolicyMatches)
			}
			// The TPM agrees: it no longer unseals the identity.
			if _, err := unsealingSigner(f.tpm, id.blob)([]byte("x")); !errors.Is(err, tpmseal.ErrPCRMismatch) {
				t.Fatalf("unseal after extend = %v; want ErrPCRMismatch", err)
			}
		})
	}
}

func TestAKPersisted(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind)
			path := filepath.Join(f.stateDir, "keys", "ak.pem")
			ak1 := f.ak(path)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("AK file mode %v, want 0600", fi.Mode().Perm())
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".ak-*"))
			if len(matches) != 0 {
				t.Errorf("temporary files left behind: %v", matches)
			}

			// A new process (and, for swtpm, a power cycle) finds the same key.
			if f.sw != nil {
				f.sw.Restart(t)
			}
			f.open()
			ak2 := f.ak(path)
			if !bytes.Equal(ak1.Name(), ak2.Name()) {
				t.Fatalf("AK name changed across processes: %x then %x", ak1.Name(), ak2.Name())
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Errorf("AK file was rewritten")
			}
			id := f.seal("work", []int{0, 7})
			nonce := newNonce(t)
			e, err := ak2.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{Nonce: nonce, Sign: seedSigner(id.seed)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := attest.Verify(e, attest.VerifyOptions{Nonce: nonce, TrustedAK: ak1.Public()}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAKConcurrentCreate(t *testing.T) {
	f := newFixture(t, "sim")
	path := filepath.Join(f.stateDir, "ak.pem")
	var wg sync.WaitGroup
	names := make([][]byte, 4)
	errs := make([]error, 4)
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ak, err := LoadOrCreateAK(context.Background(), f.tpm, path)
			if err == nil {
				names[i] = ak.Name()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range names {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(names[i], names[0]) {
			t.Fatalf("concurrent LoadOrCreateAK returned different keys")
		}
	}
}

func TestAKConcurrentQuotes(t *testing.T) {
	f := newFixture(t, "sim")
	id := f.seal("work", []int{0, 7})
	ak := f.ak("")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nonce := make([]byte, 16)
			rand.Read(nonce)
			e, err := ak.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{Nonce: nonce, Sign: unsealingSigner(f.tpm, id.blob)})
			if err == nil {
				_, err = attest.Verify(e, attest.VerifyOptions{Nonce: nonce, TrustedAKName: ak.Name()})
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if objects, sessions := f.handles(); objects != 2 || sessions != 0 {
		t.Errorf("%d objects and %d sessions loaded; want 2 and 0", objects, sessions)
	}
}

func TestQuoteAfterReboot(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, kind)
			id := f.seal("work", []int{0, 7})
			ak := f.ak("")
			quote := func() {
				t.Helper()
				nonce := newNonce(t)
				e, err := ak.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{Nonce: nonce, Sign: unsealingSigner(f.tpm, id.blob)})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := attest.Verify(e, attest.VerifyOptions{Nonce: nonce, TrustedAKName: ak.Name()}); err != nil {
					t.Fatal(err)
				}
			}
			quote()
			// The AK's handle is stale now; on swtpm the new tpmdev
			// connection flushed it too. The next quote loads it again.
			f.reboot()
			if f.sw != nil {
				f.open()
			}
			quote()
			// Another client flushes the AK behind our back.
			err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
				ak.mu.Lock()
				defer ak.mu.Unlock()
				_, err := tpm2.FlushContext{FlushHandle: ak.handle}.Execute(tpm)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			quote()
			if objects, sessions := f.handles(); objects != 2 || sessions != 0 {
				t.Errorf("%d objects and %d sessions loaded; want 2 and 0", objects, sessions)
			}
		})
	}
}

// staleOnce answers the first command of each listed code with
// TPM_RC_REFERENCE_H0 (or H1) without sending it, as a TPM does when a
// handle is no longer loaded, and counts commands by code.
type staleOnce struct {
	next   transport.TPM
	mu     sync.Mutex
	codes  map[tpm2.TPMCC]tpm2.TPMRC
	counts map[tpm2.TPMCC]int
}

func (s *staleOnce) Send(cmd []byte) ([]byte, error) {
	cc := tpmdev.CommandCode(cmd)
	s.mu.Lock()
	s.counts[cc]++
	rc, stale := s.codes[cc]
	delete(s.codes, cc)
	s.mu.Unlock()
	if stale {
		rsp := []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}
		rsp[6], rsp[7], rsp[8], rsp[9] = byte(rc>>24), byte(rc>>16), byte(rc>>8), byte(rc)
		return rsp, nil
	}
	return s.next.Send(cmd)
}

// TestQuoteReloadsStaleAK: when the TPM says the AK's handle is stale in
// the middle of a quote, the AK is loaded again and the command resent,
// without taking the SRK for stale.
func TestQuoteReloadsStaleAK(t *testing.T) {
	inj := &staleOnce{codes: map[tpm2.TPMCC]tpm2.TPMRC{}, counts: map[tpm2.TPMCC]int{}}
	f := &fixture{t: t, kind: "sim", stateDir: t.TempDir(), wrap: func(next transport.TPM) transport.TPM {
		inj.next = next
		return inj
	}}
	f.open()
	t.Cleanup(func() { f.tpm.Close() })
	id := f.seal("work", []int{0, 7})
	ak := f.ak("")
	quote := func() {
		t.Helper()
		nonce := newNonce(t)
		e, err := ak.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{Nonce: nonce, Sign: seedSigner(id.seed)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := attest.Verify(e, attest.VerifyOptions{Nonce: nonce, TrustedAKName: ak.Name()}); err != nil {
			t.Fatal(err)
		}
	}
	quote()
	inj.mu.Lock()
	inj.codes[tpm2.TPMCCQuote] = tpm2.TPMRCReferenceH0
	inj.codes[tpm2.TPMCCGetSessionAuditDigest] = tpm2.TPMRCReferenceH1
	before := maps.Clone(inj.counts)
	inj.mu.Unlock()
	quote()
	inj.mu.Lock()
	unsent, after := len(inj.codes), maps.Clone(inj.counts)
	inj.mu.Unlock()
	if unsent != 0 {
		t.Fatalf("%d injected answers not used", unsent)
	}
	for cc, want := range map[tpm2.TPMCC]int{
		tpm2.TPMCCQuote:                 2, // answered stale, then resent
		tpm2.TPMCCGetSessionAuditDigest: 2,
		tpm2.TPMCCLoad:                  1, // the sealed object; the AK was still there
		tpm2.TPMCCCreatePrimary:         0, // the SRK was not taken for stale
	} {
		if got := after[cc] - before[cc]; got != want {
			t.Errorf("%v sent %d times during the quote; want %d", cc, got, want)
		}
	}
	if objects, sessions := f.handles(); objects != 2 || sessions != 0 {
		t.Errorf("%d objects and %d sessions loaded; want 2 and 0", objects, sessions)
	}
}

func TestAKWrongTPM(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ak.pem")
	f1 := newFixture(t, "sim")
	f1.ak(path)
	f1.tpm.Close()

	f2 := newFixture(t, "sim") // another seed: another TPM
	ak := f2.ak(path)          // the file loads without the TPM
	id := f2.seal("work", []int{0})
	_, err := ak.Quote(context.Background(), f2.tpm, id.subject(), QuoteRequest{Nonce: newNonce(t), Sign: seedSigner(id.seed)})
	if !errors.Is(err, ErrAKWrongTPM) {
		t.Fatalf("Quote with another TPM's AK = %v; want ErrAKWrongTPM", err)
	}
}

func TestNoCertifyWhenEndorsementHasPassword(t *testing.T) {
	f := newFixture(t, "sim")
	id := f.seal("work", []int{0, 7})
	ak := f.ak("")
	err := f.tpm.Run(context.Background(), func(tpm transport.TPM) error {
		_, err := tpm2.HierarchyChangeAuth{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("endorsement password")},
		}.Execute(tpm)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	nonce := newNonce(t)
	e, err := ak.Quote(context.Background(), f.tpm, id.subject(), QuoteRequest{Nonce: nonce, Sign: seedSigner(id.seed)})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.CertifyAttest) != 0 || len(e.CertifySignature) != 0 {
		t.Fatalf("evidence carries a certification although the TPM refused it")
	}
	opts := attest.VerifyOptions{Nonce: nonce, TrustedAKName: ak.Name()}
	if _, err := attest.Verify(e, opts); !errors.Is(err, attest.ErrNoCertify) {
		t.Fatalf("Verify = %v; want ErrNoCertify", err)
	}
	opts.AllowMissingCertify = true
	res, err := attest.Verify(e, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Certified || res.SealedPolicyMatches {
		t.Fatalf("uncertified evidence reported as certified: %+v", res)
	}
	if _, sessions := f.handles(); sessions != 0 {
		t.Fatalf("%d sessions left loaded", sessions)
	}
}

// TestSealedAttributes quotes objects that are not proper sealed
// identities: the TPM certifies them and the verifier refuses them.
func TestSealedAttributes(t *testing.T) {
	f := newFixture(t, "sim")
	id := f.seal("work", []int{0, 7})
	ak := f.ak("")
	for _, tc := range []struct {
		name   string
		mutate func(*tpm2.TPMTPublic)
	}{
		{"userWithAuth", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true }},
		{"not fixedTPM", func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.FixedTPM = false
			p.ObjectAttributes.FixedParent = false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := tpm2.Unmarshal[tpm2.TPM2BPublic](id.blob.Public)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := tmpl.Contents()
			if err != nil {
				t.Fatal(err)
			}
			weak := *pub
			weak.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{})
			tc.mutate(&weak)
			var s Subject
			err = f.tpm.RunWithSRK(context.Background(), func(tpm transport.TPM, srk *tpmdev.SRK) error {
				rsp, err := tpm2.Create{
					ParentHandle: srk.AuthHandle(),
					InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
						Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: id.seed}),
					}},
					InPublic: tpm2.New2B(weak),
				}.Execute(tpm)
				if err != nil {
					return err
				}
				s = Subject{PublicKey: id.blob.PublicKey, SealedPublic: tpm2.Marshal(rsp.OutPublic), SealedPrivate: tpm2.Marshal(rsp.OutPrivate), PCRs: []int{0, 7}}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			nonce := newNonce(t)
			e, err := ak.Quote(context.Background(), f.tpm, s, QuoteRequest{Nonce: nonce, Sign: seedSigner(id.seed)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := attest.Verify(e, attest.VerifyOptions{Nonce: nonce, TrustedAKName: ak.Name()}); !errors.Is(err, attest.ErrSealedAttributes) {
				t.Fatalf("Verify = %v; want ErrSealedAttributes", err)
			}
		})
	}
}

func TestPolicyDigestMatchesSealstore(t *testing.T) {
	for _, pcrs := range [][]int{{0}, {0, 7}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}, {23}} {
		var pv []sealstore.PCRValue
		var values [][]byte
		for _, p := range pcrs {
			v := make([]byte, 32)
			rand.Read(v)
			pv = append(pv, sealstore.PCRValue{Index: p, Value: v})
			values = append(values, v)
		}
		want, err := sealstore.PolicyPCRDigest(tpm2.TPMAlgSHA256, pv)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tpmpolicy.PCR(tpm2.TPMAlgSHA256, pcrs, values)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("PCRs %v: policy digest %x, sealstore says %x", pcrs, got, want)
		}
	}
}

func TestAKFileRejectsGarbage(t *testing.T) {
	f := newFixture(t, "sim")
	path := filepath.Join(f.stateDir, "ak.pem")
	good, err := os.ReadFile(func() string { f.ak(path); return path }())
	if err != nil {
		t.Fatal(err)
	}
	ak, err := parseAKFile(good)
	if err != nil {
		t.Fatal(err)
	}
	reencode := func(mutate func(a *AK)) []byte {
		c := &AK{srkName: bytes.Clone(ak.srkName), public: bytes.Clone(ak.public), private: bytes.Clone(ak.private)}
		mutate(c)
		return c.marshalFile()
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not PEM", []byte("hello")},
		{"other PEM type", bytes.Replace(good, []byte("ATTESTATION KEY"), []byte("SEALED IDENTITY"), 2)},
		{"trailing garbage", append(bytes.Clone(good), "x"...)},
		{"truncated", good[:len(good)/2]},
		{"bad srk name", reencode(func(a *AK) { a.srkName = a.srkName[:10] })},
		{"bad public", reencode(func(a *AK) { a.public[10] ^= 0xff })},
		{"not restricted", reencode(func(a *AK) { a.public[7] ^= 0x01 })},
		{"bad private", reencode(func(a *AK) { a.private = a.private[:1] })},
		{"too large", bytes.Repeat([]byte("A"), maxAKFile+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseAKFile(tc.data); err == nil {
				t.Fatal("parseAKFile accepted it")
			}
			p := filepath.Join(t.TempDir(), "ak.pem")
			if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateAK(context.Background(), f.tpm, p); err == nil {
				t.Fatal("LoadOrCreateAK accepted it")
			}
			if got, _ := os.ReadFile(p); !bytes.Equal(got, tc.data) {
				t.Fatal("LoadOrCreateAK overwrote a bad file")
			}
		})
	}
}

func TestAKPublicPEM(t *testing.T) {
	f := newFixture(t, "sim")
	ak := f.ak("")
	p, err := ak.PublicPEM()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(p, []byte("-----BEGIN PUBLIC KEY-----\n")) {
		t.Fatalf("PublicPEM = %q", p)
	}
	if len(ak.Name()) != 34 || ak.Name()[1] != byte(tpm2.TPMAlgSHA256) {
		t.Fatalf("Name = %x", ak.Name())
	}
}

// The pin file names the AK and holds its key, for either pin.
func TestAKPinFile(t *testing.T) {
	ak := newFixture(t, "sim").ak("")
	p, err := ak.PinFile()
	if err != nil {
		t.Fatal(err)
	}
	if want := "# name " + hex.EncodeToString(ak.Name()) + "\n-----BEGIN PUBLIC KEY-----\n"; !bytes.HasPrefix(p, []byte(want)) {
		t.Fatalf("PinFile = %q", p)
	}
	pub, err := attest.ParsePEMPublicKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := pub.(*ecdsa.PublicKey); !ok || !k.Equal(ak.key) {
		t.Fatal("the pinned key is not the AK")
	}
}

func TestBindingAndPossessionMessage(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	k, _ := ssh.NewPublicKey(pub)
	nonce := []byte("12345678")
	b := attest.Binding(nonce, k)
	if len(b) != 32 {
		t.Fatalf("Binding is %d bytes", len(b))
	}
	// The length prefixes keep (nonce, key) pairs apart.
	if bytes.Equal(attest.Binding(append(nonce, 0), k), b) || bytes.Equal(attest.Binding(nonce, nil), b) {
		t.Fatal("Binding collides")
	}
	m := attest.PossessionMessage(nonce, []byte("quoted"))
	want := append([]byte("icn-agent possession v1\x00\x00\x00\x00\x0812345678\x00\x00\x00\x06"), "quoted"...)
	if !bytes.Equal(m, want) {
		t.Fatalf("PossessionMessage = %q, want %q", m, want)
	}
}

// objectName is the TPM Name of a marshalled public area.
func objectName(t testing.TB, pub *tpm2.TPM2BPublic) []byte {
	t.Helper()
	contents, err := pub.Contents()
	if err != nil {
		t.Fatal(err)
	}
	name, err := tpm2.ObjectName(contents)
	if err != nil {
		t.Fatal(err)
	}
	return name.Buffer
}
