package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// PINs and signed policies in the commands and the agent.
//
// A PIN-protected identity (keygen or import --pin) is sealed with a
// policy that ends in TPM2_PolicyAuthValue and the authValue
// sealstore.PINAuthValue(PIN), without noDA: the TPM counts wrong PINs and
// locks out after a few (see docs/pcr-policies.md). The commands read the
// PIN from --pin-file, or ask on the terminal (twice for a new PIN); the
// agent asks through SSH_ASKPASS (pinUnsealer). Nobody keeps a PIN: the
// agent asks each time it must unseal (the first signature, and again
// after the seed was dropped), and a wrong PIN is reported, never retried.
//
// Before asking, the policy is checked without the PIN
// (sealstore.CheckPolicy): if the PCRs moved, or no signed policy approves
// them, asking could not help and is not done.

const (
	// minPINLen is the shortest PIN keygen and import accept.
	minPINLen = 4
	// maxPINFile bounds a PIN file and an askpass program's output.
	maxPINFile = 4096
	// askpassTimeout bounds how long the agent waits for a PIN.
	askpassTimeout = 2 * time.Minute
)

// pinUnsealer is the agent's agentsrv.Unsealer. It unseals with the
// agent's TPM, finds the signed policies of PolicyAuthorizedPCR identities
// in the store, and for PIN-protected identities asks for the PIN by
// running the SSH_ASKPASS program with the prompt as its argument and
// reading the PIN from its standard output, as ssh-add does.
type pinUnsealer struct {
	tpm     sealstore.TPM
	store   *sealstore.Store
	askpass string // the program; empty: PIN identities cannot unseal
	log     *slog.Logger
}

// newPINUnsealer returns the agent's unsealer. askpass is the SSH_ASKPASS
// program (may be empty).
func newPINUnsealer(tpm sealstore.TPM, store *sealstore.Store, askpass string, log *slog.Logger) *pinUnsealer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &pinUnsealer{tpm: tpm, store: store, askpass: askpass, log: log}
}

// Unseal implements agentsrv.Unsealer.
func (u *pinUnsealer) Unseal(ctx context.Context, b *sealstore.Blob, dst []byte) error {
	policies := signedPolicies(u.store, b, u.log)
	if !b.Policy.PIN {
		err := sealstore.UnsealWith(ctx, u.tpm, b, dst, sealstore.UnsealOptions{Policies: policies})
		return explainUnseal(ctx, u.tpm, u.store, b, err)
	}
	if err := sealstore.CheckPolicy(ctx, u.tpm, b, policies); err != nil {
		return explainUnseal(ctx, u.tpm, u.store, b, err)
	}
	if u.askpass == "" {
		return fmt.Errorf("%s is protected by a PIN and the agent has no program to ask for it: start icn-agent serve with SSH_ASKPASS set (for example to /usr/bin/ssh-askpass)", b.Name)
	}
	pin, err := runAskpass(ctx, u.askpass, pinPrompt(b))
	if err != nil {
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	defer secmem.Wipe(pin)
	err = sealstore.UnsealWith(ctx, u.tpm, b, dst, sealstore.UnsealOptions{PIN: pin, Policies: policies})
	if errors.Is(err, sealstore.ErrWrongPIN) {
		u.log.Warn("wrong PIN", "name", b.Name, "fingerprint", ssh.FingerprintSHA256(b.PublicKey))
	}
	return explainUnseal(ctx, u.tpm, u.store, b, err)
}

// pinPrompt is the prompt for an identity's PIN.
func pinPrompt(b *sealstore.Blob) string {
	return fmt.Sprintf("Enter PIN for icn-agent identity %s (%s): ", b.Name, ssh.FingerprintSHA256(b.PublicKey))
}

// runAskpass runs prog with prompt as its only argument and returns the
// first line of its standard output. A non-zero exit means the user
// cancelled.
//
// The output is read from a pipe this function owns into one fixed,
// locked buffer (readSecret), which is wiped before returning: exec.Cmd's
// own copying (Output, a bytes.Buffer as Stdout) would go through buffers
// that grow by reallocation and are never cleared.
func runAskpass(ctx context.Context, prog, prompt string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, askpassTimeout)
		defer cancel()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cannot ask for the PIN: %w", err)
	}
	defer r.Close()
	cmd := exec.CommandContext(ctx, prog, prompt)
	cmd.Stdout = w
	cmd.Stdin = nil
	// On timeout or cancel, kill the program's whole process group: a
	// child it started must not keep its output open (and us waiting).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	startErr := cmd.Start()
	w.Close() // the program holds the write end now; EOF comes when it exits
	if startErr != nil {
		return nil, fmt.Errorf("cannot ask for the PIN: run SSH_ASKPASS program %s: %w", prog, startErr)
	}
	// Whatever happens to the program, stop reading at the deadline.
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })
	defer stop()

	buf, err := secmem.New(maxPINFile)
	if err != nil {
		cmd.Cancel()
		cmd.Wait()
		return nil, fmt.Errorf("cannot ask for the PIN: %w", err)
	}
	defer buf.Destroy()
	n, over, readErr := readSecret(r, buf.Bytes())
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("no PIN entered in time (%s): %w", prog, ctx.Err())
	case waitErr != nil:
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			return nil, fmt.Errorf("PIN entry cancelled (%s exited with status %d)", prog, ee.ExitCode())
		}
		return nil, fmt.Errorf("cannot ask for the PIN: run SSH_ASKPASS program %s: %w", prog, waitErr)
	case readErr != nil:
		return nil, fmt.Errorf("cannot ask for the PIN: read from %s: %w", prog, readErr)
	case over:
		return nil, fmt.Errorf("the SSH_ASKPASS program %s wrote more than %d bytes; that is not a PIN", prog, maxPINFile)
	}
	pin := firstSecretLine(buf.Bytes()[:n])
	if len(pin) == 0 {
		return nil, errors.New("no PIN entered")
	}
	return pin, nil
}

// readSecret reads r to its end into buf, never anywhere else, and returns
// how much it holds. If r has more than fits, the rest is read and
// discarded through a small buffer that is wiped (so that a writer is not
// killed by a broken pipe before it exits) and over is true.
func readSecret(r io.Reader, buf []byte) (n int, over bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, false, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	var sink [512]byte
	defer secmem.Wipe(sink[:])
	for {
		m, err := r.Read(sink[:])
		if m > 0 {
			over = true
		}
		if errors.Is(err, io.EOF) {
			return n, over, nil
		}
		if err != nil {
			return n, over, err
		}
	}
}

// readPINFile reads the first line of the regular file at path (a FIFO or
// device is refused by safefile.Open, not waited on), through a locked
// buffer that is wiped. The caller wipes the result.
func readPINFile(path string) ([]byte, error) {
	f, err := safefile.Open(path, safefile.Options{})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf, err := secmem.New(maxPINFile)
	if err != nil {
		return nil, err
	}
	defer buf.Destroy()
	n, over, err := readSecret(f, buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if over {
		return nil, fmt.Errorf("%s: %w: more than %d bytes", path, safefile.ErrTooLarge, maxPINFile)
	}
	return firstSecretLine(buf.Bytes()[:n]), nil
}

// firstSecretLine returns a copy of the first line of data, without its line
// ending. The copy is exactly its size, so appending nothing to it ever
// leaves an outgrown array behind; the caller wipes it.
func firstSecretLine(data []byte) []byte {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	return bytes.Clone(bytes.TrimSuffix(line, []byte("\r")))
}

// signedPolicies returns the store's valid signed policies if b is sealed
// to signed policies; files that are not valid policies are logged and
// skipped.
func signedPolicies(store *sealstore.Store, b *sealstore.Blob, log *slog.Logger) []*sealstore.SignedPolicy {
	if b.Policy.Kind != sealstore.PolicyAuthorizedPCR || store == nil {
		return nil
	}
	entries, err := store.SignedPolicies()
	if err != nil {
		log.Warn("cannot read the signed policies", "err", err)
		return nil
	}
	var out []*sealstore.SignedPolicy
	for _, e := range entries {
		if e.Err != nil {
			log.Warn("ignoring a file that is not a valid signed policy", "path", e.Path, "err", e.Err)
			continue
		}
		out = append(out, e.Policy)
	}
	return out
}

// explainUnseal adds what to do next to an unseal error: the TPM's
// dictionary-attack counter after a wrong PIN, how long a lockout lasts,
// the command that signs missing PCR values.
func explainUnseal(ctx context.Context, tpm sealstore.TPM, store *sealstore.Store, b *sealstore.Blob, err error) error {
	var mp *sealstore.MissingPolicyError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sealstore.ErrWrongPIN):
		if st, derr := readDA(ctx, tpm); derr == nil {
			return fmt.Errorf("%w; the TPM has counted %d failed PIN attempt(s) and locks every PIN-protected identity out at %d", err, st.Counter, st.MaxTries)
		}
	case errors.Is(err, sealstore.ErrLockout):
		if st, derr := readDA(ctx, tpm); derr == nil {
			return fmt.Errorf("%w; it forgets one failed attempt every %s (%d counted, lockout at %d), or the TPM owner can reset it with tpm2_dictionarylockout --clear-lockout", err, time.Duration(st.RecoveryTime)*time.Second, st.Counter, st.MaxTries)
		}
	case errors.As(err, &mp):
		dir := "STORE/policies"
		if store != nil {
			dir = store.PolicyDir()
		}
		return fmt.Errorf("%w: where the policy key %s is, run icn-agent policy sign --key KEYFILE --pcrs %s --values FILE, FILE holding the lines %s (or --values current on this machine), then put the .policy file it writes in %s",
			err, mp.KeyID, joinInts(b.Policy.Indexes()), sealstore.FormatPCRValues(mp.PCRs, " "), dir)
	}
	return err
}

// readDA reads the TPM's dictionary-attack state.
func readDA(ctx context.Context, t sealstore.TPM) (tpmdev.DAState, error) {
	var st tpmdev.DAState
	err := t.RunWithSRK(ctx, func(tpm transport.TPM, _ *tpmdev.SRK) error {
		var err error
		st, err = tpmdev.ReadDA(tpm)
		return err
	})
	return st, err
}

// unsealOptions returns what sealstore.UnsealWith needs to unseal b in a
// command: the store's signed policies and, for a PIN-protected identity,
// the PIN from pinFile or else asked once on the terminal, after checking
// that the policy can be satisfied (so a PIN is never spent on an unseal
// that cannot work). The caller wipes opts.PIN.
func unsealOptions(ctx context.Context, tpm sealstore.TPM, store *sealstore.Store, b *sealstore.Blob, pinFile string, log *slog.Logger) (sealstore.UnsealOptions, error) {
	opts := sealstore.UnsealOptions{Policies: signedPolicies(store, b, log)}
	if !b.Policy.PIN {
		return opts, nil
	}
	if err := sealstore.CheckPolicy(ctx, tpm, b, opts.Policies); err != nil {
		return opts, explainUnseal(ctx, tpm, store, b, err)
	}
	pin, err := readPIN(pinFile, b.Name, false)
	if err != nil {
		return opts, err
	}
	opts.PIN = pin
	return opts, nil
}

// unsealForCommand unseals b into dst for a command (check, reseal) with
// unsealOptions. It returns the PIN used (nil if none), which the caller
// must wipe.
func unsealForCommand(ctx context.Context, tpm sealstore.TPM, store *sealstore.Store, b *sealstore.Blob, pinFile string, dst []byte, log *slog.Logger) ([]byte, error) {
	opts, err := unsealOptions(ctx, tpm, store, b, pinFile, log)
	if err != nil {
		return nil, err
	}
	if err := sealstore.UnsealWith(ctx, tpm, b, dst, opts); err != nil {
		secmem.Wipe(opts.PIN)
		return nil, explainUnseal(ctx, tpm, store, b, err)
	}
	return opts.PIN, nil
}

// readPIN reads a PIN from the first line of pinFile or, if pinFile is
// empty, from the terminal; a new PIN (confirm) is asked twice and must
// be at least minPINLen bytes.
func readPIN(pinFile, name string, confirm bool) ([]byte, error) {
	var pin []byte
	if pinFile != "" {
		var err error
		if pin, err = readPINFile(pinFile); err != nil {
			return nil, fmt.Errorf("read PIN file: %w", err)
		}
		if len(pin) == 0 {
			return nil, fmt.Errorf("PIN file %s is empty: put the PIN on its first line", pinFile)
		}
	} else {
		tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("%s needs a PIN and there is no terminal to ask for it; pass --pin-file FILE", name)
		}
		defer tty.Close()
		what := "PIN"
		if confirm {
			what = "new PIN"
		}
		if pin, err = promptSecret(tty, fmt.Sprintf("Enter %s for %s: ", what, name)); err != nil {
			return nil, err
		}
		if confirm {
			again, err := promptSecret(tty, fmt.Sprintf("Enter the new PIN for %s again: ", name))
			if err != nil {
				secmem.Wipe(pin)
				return nil, err
			}
			same := bytes.Equal(pin, again)
			secmem.Wipe(again)
			if !same {
				secmem.Wipe(pin)
				return nil, errors.New("the two PINs differ; nothing was written")
			}
		}
	}
	if confirm && len(pin) < minPINLen {
		secmem.Wipe(pin)
		return nil, fmt.Errorf("the PIN is too short: use at least %d characters", minPINLen)
	}
	if len(pin) > sealstore.MaxPINSize {
		secmem.Wipe(pin)
		return nil, fmt.Errorf("the PIN is longer than %d bytes", sealstore.MaxPINSize)
	}
	return pin, nil
}

// promptSecret prints prompt on tty and reads a line without echo. The
// line is read into a fixed locked buffer that is wiped, as the askpass
// output is (term.ReadPassword appends byte by byte to a slice, leaving
// every outgrown array behind with a prefix of the PIN in it); the caller
// wipes the result.
func promptSecret(tty *os.File, prompt string) ([]byte, error) {
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read PIN: %w", err)
	}
	// As term.ReadPassword: no echo, line editing and signals kept.
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	noEcho.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return nil, fmt.Errorf("read PIN: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(tty, prompt)
	defer fmt.Fprintln(tty)

	buf, err := secmem.New(maxPINFile)
	if err != nil {
		return nil, fmt.Errorf("read PIN: %w", err)
	}
	defer buf.Destroy()
	n, over, err := readLineInto(tty, buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("read PIN: %w", err)
	}
	if over {
		return nil, fmt.Errorf("the PIN is longer than %d bytes", maxPINFile)
	}
	return firstSecretLine(buf.Bytes()[:n]), nil
}

// readLineInto reads from r into buf until a newline or the end of the
// input, and returns how much buf holds. A line longer than buf is read to
// its end through a small buffer that is wiped, and over is true.
func readLineInto(r io.Reader, buf []byte) (n int, over bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if bytes.IndexByte(buf[n-m:n], '\n') >= 0 || errors.Is(err, io.EOF) {
			return n, false, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	var sink [512]byte
	defer secmem.Wipe(sink[:])
	for {
		m, err := r.Read(sink[:])
		if bytes.IndexByte(sink[:m], '\n') >= 0 || errors.Is(err, io.EOF) {
			return n, true, nil
		}
		if err != nil {
			return n, true, err
		}
	}
}
