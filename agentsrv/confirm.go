package agentsrv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// ErrNotConfirmed is returned (wrapped) for a signature the user did not
// allow: the askpass program said no, failed, timed out, or there is
// none.
var ErrNotConfirmed = errors.New("agentsrv: use of key not confirmed")

// confirmPrompt is the question the askpass program shows: the key, the
// process asking and, when the client said, the destination.
func confirmPrompt(what, fp string, info *connInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Allow use of %s?\nKey fingerprint %s.\nRequested by %s.", what, fp, info.peer)
	if d := info.dest.String(); d != "" {
		if info.dest.Forwarding {
			fmt.Fprintf(&b, "\nThrough a forwarded agent on %s.", d)
		} else {
			fmt.Fprintf(&b, "\nTo log in to %s.", d)
		}
	}
	return b.String()
}

// askConfirm runs the askpass program (SSH_ASKPASS_PROMPT=confirm) to have
// the user allow one signature. Exit status 0 allows it; anything else,
// including no program configured, refuses it with ErrNotConfirmed. The
// program's whole process group is killed if it outlives askPassTimeout
// or the request.
func (s *Server) askConfirm(ctx context.Context, fp, prompt string) error {
	if s.askPass == "" {
		s.log.Warn("agentsrv: signature refused: the key needs confirmation and no askpass program is configured (set SSH_ASKPASS)", "fingerprint", fp)
		return fmt.Errorf("%w: no askpass program to ask with", ErrNotConfirmed)
	}
	ctx, cancel := context.WithTimeout(ctx, askPassTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.askPass, prompt)
	cmd.Env = append(os.Environ(), "SSH_ASKPASS_PROMPT=confirm")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		s.log.Info("agentsrv: use of key not confirmed", "fingerprint", fp, "err", err)
		return fmt.Errorf("%w: %s: %w", ErrNotConfirmed, fp, err)
	}
	s.log.Debug("agentsrv: use of key confirmed", "fingerprint", fp)
	return nil
}
