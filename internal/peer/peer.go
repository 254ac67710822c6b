// Package peer tells who is at the other end of an agent connection: the
// uid and pid the kernel recorded when the process connected
// (SO_PEERCRED), and from /proc the executable and command line of that
// process, for confirmation prompts, the audit log and status.
//
// The executable and command line are read when the connection is
// accepted. They describe the process that connected, which may have
// exec'ed something else since, or passed its connection to another
// process: they are for people, not for access decisions (the uid is).
package peer

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Info describes a connected process.
type Info struct {
	UID, PID int
	// Exe is the path of its executable (/proc/PID/exe), empty if it
	// cannot be read (another user's process, a process gone).
	Exe string
	// Cmdline is its command line, arguments joined by spaces, at most
	// MaxCmdline bytes; empty if it cannot be read.
	Cmdline string
}

// MaxCmdline bounds how much of a command line is kept.
const MaxCmdline = 512

// Lookup returns what /proc says of pid, with uid as given.
func Lookup(uid, pid int) Info {
	in := Info{UID: uid, PID: pid}
	if pid <= 0 {
		return in
	}
	p := "/proc/" + strconv.Itoa(pid)
	if exe, err := os.Readlink(p + "/exe"); err == nil {
		in.Exe = exe
	}
	if f, err := os.Open(p + "/cmdline"); err == nil {
		data, _ := io.ReadAll(io.LimitReader(f, MaxCmdline))
		f.Close()
		data = bytes.TrimRight(data, "\x00")
		in.Cmdline = strings.ToValidUTF8(string(bytes.ReplaceAll(data, []byte{0}, []byte{' '})), "?")
	}
	return in
}

// String describes the process for people: "ssh (pid 4242, uid 1000)".
func (in Info) String() string {
	name := in.Cmdline
	if name == "" {
		name = in.Exe
	}
	if name == "" {
		name = "unknown process"
	}
	return fmt.Sprintf("%s (pid %d, uid %d)", name, in.PID, in.UID)
}
