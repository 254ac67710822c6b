package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// docBlock returns the sh code block that follows the marker comment
// <!-- NAME: ... --> in a document.
func docBlock(t *testing.T, path, name string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- " + regexp.QuoteMeta(name) + ":[^>]*-->\\s*```sh\\n(.*?)```")
	m := re.FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s: no sh block after <!-- %s: -->", path, name)
	}
	return string(m[1])
}

// TestSetupDoc follows docs/setup.md on a machine with swtpm only, as a
// fresh user would: it runs the document's block as written, with HOME
// and the XDG directories of a new user, and the block ends by verifying a
// git commit signed through the agent.
func TestSetupDoc(t *testing.T) {
	script := docBlock(t, "../../docs/setup.md", "setup-swtpm")
	bin, err := agentBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are limited to 108 bytes: keep HOME short.
	home, err := os.MkdirTemp("", "home")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// If the block failed half way, stop what it started.
		state := filepath.Join(home, ".local/state/swtpm")
		exec.Command("pkill", "-f", "icn-agent serve -a "+filepath.Join(state, "agent.sock")).Run()
		if pid, err := os.ReadFile(filepath.Join(state, "swtpm.pid")); err == nil {
			exec.Command("kill", strings.TrimSpace(string(pid))).Run()
		}
		os.RemoveAll(home)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = home
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "XDG_") || strings.HasPrefix(kv, "SSH_AUTH_SOCK=") || strings.HasPrefix(kv, "ICN_AGENT_") || strings.HasPrefix(kv, "GIT_") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env,
		"HOME="+home,
		"PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"),
		"GIT_CONFIG_NOSYSTEM=1",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docs/setup.md failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `Good "git" signature for me@laptop`) {
		t.Fatalf("docs/setup.md did not end with a verified commit:\n%s", out)
	}
	t.Logf("%s", out)
}
