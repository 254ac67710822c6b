package agentsrv

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"

	"github.com/icn/icn-agent/internal/memscan"
)

// TestSecretHygiene runs an agent in a child process, has OpenSSH's
// ssh-add (another process) add an Ed25519 key, lock the agent, guess
// wrong and unlock it, and scans the child's memory after each step for
// the seed, the passphrase and the wrong guess. Once a step is done, none
// may be anywhere in the agent's memory; while the key is loaded, its
// seed may be only in its locked buffer (one copy). The same steps
// against x/crypto's keyring behind agent.ServeAgent are the control:
// there the secrets are found.
func TestSecretHygiene(t *testing.T) {
	if mode := os.Getenv("AGENTSRV_HYGIENE_CHILD"); mode != "" {
		hygieneChild(mode, os.Getenv("AGENTSRV_HYGIENE_SOCK"))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("reading another process's memory needs root; CI runs as root")
	}
	if _, err := exec.LookPath("ssh-add"); err != nil {
		t.Fatal("ssh-add not installed: run .ci/run, or apt-get install openssh-client")
	}
	dir := socketDir(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "hygiene")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	pass := []byte("pass-" + hex.EncodeToString(randBytes(12)))
	guess := []byte("guess-" + hex.EncodeToString(randBytes(12)))
	askpass := func(answer []byte) string {
		p := filepath.Join(dir, "askpass-"+string(answer[:4]))
		os.WriteFile(p, []byte("#!/bin/sh\necho "+string(answer)+"\n"), 0o700)
		return p
	}
	passProg, guessProg := askpass(pass), askpass(guess)

	for _, mode := range []string{"icn-agent", "keyring"} {
		t.Run(mode, func(t *testing.T) {
			sock := filepath.Join(dir, mode+".sock")
			cmd := exec.Command(os.Args[0], "-test.run=^TestSecretHygiene$")
			cmd.Env = append(os.Environ(), "AGENTSRV_HYGIENE_CHILD="+mode, "AGENTSRV_HYGIENE_SOCK="+sock)
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer stdin.Close()
			if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.HasPrefix(line, "ready") {
				t.Fatalf("child: %q, %v", line, err)
			}
			pid := cmd.Process.Pid

			sshAdd := func(prog string, args ...string) {
				t.Helper()
				c := exec.Command("ssh-add", args...)
				c.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock, "SSH_ASKPASS="+prog, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
				out, err := c.CombinedOutput()
				if err != nil && prog != guessProg {
					t.Fatalf("ssh-add %v: %v\n%s", args, err, out)
				}
			}
			count := func(name string, secret []byte) int {
				t.Helper()
				hits, st, err := memscan.Scan(pid, []memscan.Pattern{{Name: name, Bytes: secret}})
				if err != nil || st.Bytes == 0 {
					t.Fatalf("scan: %v (%d bytes read)", err, st.Bytes)
				}
				for _, h := range hits {
					t.Logf("%s: %v", mode, h)
				}
				return len(hits)
			}
			seed := priv.Seed()
			found := map[string]int{}
			sshAdd(passProg, keyFile)
			loaded := count("seed", seed)
			sshAdd(passProg, "-d", keyFile)
			found["seed after removal"] = count("seed", seed)
			sshAdd(passProg, "-x")
			found["passphrase while locked"] = count("passphrase", pass)
			sshAdd(guessProg, "-X")
			found["wrong guess"] = count("guess", guess)
			sshAdd(passProg, "-X")
			found["passphrase after unlock"] = count("passphrase", pass)

			// Extension contents (a PIN, say), small and large enough to
			// grow the request buffer. The client is this process, which
			// is not scanned.
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			cl := agent.NewClient(c)
			pin := []byte("pin-" + hex.EncodeToString(randBytes(12)))
			for _, pad := range []int{0, 64 << 10} {
				contents := append(ssh.Marshal(&unsealRequest{Name: "none", LifetimeSecs: 1}), make([]byte, pad)...)
				cl.Extension(ExtUnseal, append(contents, pin...))
				found[fmt.Sprintf("pin in a %d-byte extension", len(contents)+len(pin))] = count("pin", pin)
			}

			if mode == "keyring" {
				// The control: copies are left behind.
				if found["seed after removal"] == 0 || found["passphrase while locked"] == 0 || found["wrong guess"] == 0 {
					t.Errorf("control: no copies found in x/crypto's agent (%v); the scan proves nothing", found)
				}
				return
			}
			if loaded > 1 {
				t.Errorf("%d copies of the seed while the key is loaded, want 1 (its locked buffer)", loaded)
			}
			for what, n := range found {
				if n != 0 {
					t.Errorf("%s: %d copies in the agent's memory, want 0", what, n)
				}
			}
		})
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// hygieneChild serves an agent on sock until stdin is closed.
func hygieneChild(mode, sock string) {
	if mode == "icn-agent-256fds" {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 256, Max: 256}); err != nil {
			fmt.Println("setrlimit:", err)
			os.Exit(1)
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel(); l.Close() }()
	fmt.Println("ready")
	if mode == "keyring" {
		keyring := agent.NewKeyring()
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(0)
			}
			go func() { agent.ServeAgent(keyring, c); c.Close() }()
		}
	}
	s := New(Config{Unsealer: newFakeUnsealer(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Sleep: func(context.Context, time.Duration) {}})
	s.Serve(ctx, l)
	os.Exit(0)
}

// TestIdleFloodUnderFDLimit is the scenario of an agent limited to 256
// file descriptors (ulimit -n 256) facing 1,000 idle connections of its
// own user: ssh-add -l must still be answered, promptly.
func TestIdleFloodUnderFDLimit(t *testing.T) {
	if _, err := exec.LookPath("ssh-add"); err != nil {
		t.Fatal("ssh-add not installed: run .ci/run, or apt-get install openssh-client")
	}
	sock := filepath.Join(socketDir(t), "flood.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecretHygiene$")
	cmd.Env = append(os.Environ(), "AGENTSRV_HYGIENE_CHILD=icn-agent-256fds", "AGENTSRV_HYGIENE_SOCK="+sock)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("child: %q, %v", line, err)
	}
	for range 1000 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
	}
	start := time.Now()
	c := exec.Command("ssh-add", "-l")
	c.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out, err := c.CombinedOutput()
	took := time.Since(start)
	// Exit status 1 with "no identities" is an answer; 2 is no agent.
	if !strings.Contains(string(out), "no identities") {
		t.Fatalf("ssh-add -l under a flood: %v\n%s", err, out)
	}
	t.Logf("ssh-add -l answered in %v under 1,000 idle connections", took)
}
