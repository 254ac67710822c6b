package tpmdev

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// DefaultDevice is the kernel's TPM resource manager, used by the "auto" spec.
const DefaultDevice = "/dev/tpmrm0"

// Kind says what sort of TPM a Spec selects.
type Kind int

const (
	// KindDevice is a character device such as /dev/tpmrm0.
	KindDevice Kind = iota + 1
	// KindSwtpmUnix is a running swtpm reached over its unix server socket.
	KindSwtpmUnix
	// KindSwtpmTCP is a running swtpm reached over its TCP server port.
	KindSwtpmTCP
	// KindSim is the in-process reference simulator (insecure, for development).
	KindSim
)

// Spec is a parsed TPM selector, as given to --tpm, ICN_AGENT_TPM or the
// config's device key.
type Spec struct {
	Kind Kind
	// Path is the device path (KindDevice) or the socket path (KindSwtpmUnix).
	Path string
	// Addr is HOST:PORT for KindSwtpmTCP.
	Addr string
}

// ErrNoTPM means "auto" found no TPM device on this machine.
var ErrNoTPM = errors.New("tpmdev: no TPM found")

// ParseSpec parses a TPM selector:
//
//	auto                  /dev/tpmrm0 if it exists
//	/dev/tpmrm0           a TPM character device (any absolute path)
//	swtpm:unix:PATH       a running swtpm's unix server socket
//	swtpm:tcp:HOST:PORT   a running swtpm's TCP server port
//	sim                   the in-process reference simulator (insecure)
//
// "auto" is resolved here: it becomes the device spec, or an error wrapping
// ErrNoTPM that tells the user about --tpm sim.
func ParseSpec(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == "auto":
		if _, err := os.Stat(DefaultDevice); err != nil {
			return Spec{}, fmt.Errorf("%w: %s does not exist; on a machine without a TPM use --tpm sim (an insecure development TPM) or --tpm swtpm:unix:PATH", ErrNoTPM, DefaultDevice)
		}
		return Spec{Kind: KindDevice, Path: DefaultDevice}, nil
	case s == "sim":
		return Spec{Kind: KindSim}, nil
	case strings.HasPrefix(s, "/"):
		return Spec{Kind: KindDevice, Path: s}, nil
	case strings.HasPrefix(s, "swtpm:unix:"):
		p := strings.TrimPrefix(s, "swtpm:unix:")
		if p == "" {
			return Spec{}, fmt.Errorf("tpmdev: %q: missing socket path; want swtpm:unix:PATH", s)
		}
		return Spec{Kind: KindSwtpmUnix, Path: p}, nil
	case strings.HasPrefix(s, "swtpm:tcp:"):
		a := strings.TrimPrefix(s, "swtpm:tcp:")
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return Spec{}, fmt.Errorf("tpmdev: %q: want swtpm:tcp:HOST:PORT", s)
		}
		return Spec{Kind: KindSwtpmTCP, Addr: a}, nil
	}
	return Spec{}, fmt.Errorf("tpmdev: unknown TPM spec %q; use auto, a device path such as /dev/tpmrm0, swtpm:unix:PATH, swtpm:tcp:HOST:PORT or sim", s)
}

// String returns the spec in the form ParseSpec accepts.
func (s Spec) String() string {
	switch s.Kind {
	case KindDevice:
		return s.Path
	case KindSwtpmUnix:
		return "swtpm:unix:" + s.Path
	case KindSwtpmTCP:
		return "swtpm:tcp:" + s.Addr
	case KindSim:
		return "sim"
	}
	return "invalid"
}
