package peer

import (
	"os"
	"strings"
	"testing"
)

func TestLookupSelf(t *testing.T) {
	in := Lookup(os.Getuid(), os.Getpid())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if in.Exe != exe {
		t.Errorf("Exe %q, want %q", in.Exe, exe)
	}
	if !strings.Contains(in.Cmdline, os.Args[0]) {
		t.Errorf("Cmdline %q lacks %q", in.Cmdline, os.Args[0])
	}
	if len(in.Cmdline) > MaxCmdline {
		t.Errorf("Cmdline is %d bytes", len(in.Cmdline))
	}
	if s := in.String(); !strings.Contains(s, "pid ") {
		t.Errorf("String %q", s)
	}
	gone := Lookup(1000, 1<<30)
	if gone.Exe != "" || gone.Cmdline != "" || !strings.Contains(gone.String(), "unknown process") {
		t.Errorf("a pid that does not exist: %+v", gone)
	}
}
