package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/icn/icn-agent/internal/swtpmtest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"icn-agent": main})
}

// TestScript runs the txtar scripts in testdata/script against the real
// command, once with the in-process simulator and once with a swtpm process
// per script. Conditions [sim] and [swtpm] select one of the two.
func TestScript(t *testing.T) {
	for _, tool := range []string{"ssh-keygen", "swtpm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: run .ci/run, or apt-get install openssh-client swtpm swtpm-tools tpm2-tools", tool)
		}
	}
	for _, backend := range []string{"sim", "swtpm"} {
		t.Run(backend, func(t *testing.T) {
			testscript.Run(t, testscript.Params{
				Dir:                 "testdata/script",
				RequireExplicitExec: true,
				Setup: func(e *testscript.Env) error {
					work := e.WorkDir
					e.Setenv("HOME", work)
					e.Setenv("XDG_DATA_HOME", filepath.Join(work, ".local/share"))
					e.Setenv("XDG_STATE_HOME", filepath.Join(work, ".local/state"))
					e.Setenv("XDG_CONFIG_HOME", filepath.Join(work, ".config"))
					e.Setenv("XDG_RUNTIME_DIR", filepath.Join(work, "run"))
					e.Setenv("STORE", filepath.Join(work, ".local/share/icn-agent/identities"))
					e.Setenv("PATH", os.Getenv("PATH"))
					if backend == "swtpm" {
						sw := swtpmtest.Start(t)
						e.Setenv("ICN_AGENT_TPM", sw.Spec())
						e.Setenv("TPM2TOOLS_TCTI", "swtpm:path="+sw.Socket)
					} else {
						e.Setenv("ICN_AGENT_TPM", "sim")
					}
					return nil
				},
				Condition: func(cond string) (bool, error) {
					switch cond {
					case "sim", "swtpm":
						return cond == backend, nil
					}
					return false, nil
				},
			})
		})
	}
}
