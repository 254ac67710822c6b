package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/adrg/xdg"

	"github.com/icn/icn-agent/internal/safefile"
)

// tpmConfig builds the expected Config from an identity.tpm table.
func tpmConfig(t TPM) Config {
	c := Default()
	c.Identity.TPM = t
	return c
}

// controlConfig is the default configuration with per-identity settings
// and the audit and notify keys changed by f.
func controlConfig(f func(c *Config)) Config {
	c := Default()
	f(&c)
	return c
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		content string   // file content; "" means the file does not exist
		want    Config   // on success
		wantErr []string // substrings of the error, besides the path
	}{
		{
			name:    "empty file gives defaults",
			content: "\n",
			want:    Default(),
		},
		{
			name:    "comments only",
			content: "# nothing configured\n[identity.tpm]\n",
			want:    Default(),
		},
		{
			name: "full file",
			content: `[identity.tpm]
enabled = true
pcrs = [0, 2, 4, 7, 23]
device = "swtpm:unix:/run/swtpm/sock"
auto_lock_timeout_secs = 60
pcr_poll_secs = 5
tpm_timeout_secs = 3
`,
			want: tpmConfig(TPM{Enabled: true, PCRs: []int{0, 2, 4, 7, 23}, Device: "swtpm:unix:/run/swtpm/sock", AutoLockTimeoutSecs: 60, PCRPollSecs: 5, TPMTimeoutSecs: 3}),
		},
		{
			name:    "partial file keeps other defaults",
			content: "[identity.tpm]\npcrs = [7]\n",
			want:    tpmConfig(TPM{Enabled: true, PCRs: []int{7}, Device: "auto", AutoLockTimeoutSecs: 300, PCRPollSecs: 30, TPMTimeoutSecs: 10}),
		},
		{
			name:    "dotted keys",
			content: "identity.tpm.device = \"/dev/tpmrm0\"\n",
			want:    tpmConfig(TPM{Enabled: true, PCRs: []int{0, 7}, Device: "/dev/tpmrm0", AutoLockTimeoutSecs: 300, PCRPollSecs: 30, TPMTimeoutSecs: 10}),
		},
		{
			name:    "zero timeout allowed",
			content: "[identity.tpm]\nauto_lock_timeout_secs = 0\n",
			want:    tpmConfig(TPM{Enabled: true, PCRs: []int{0, 7}, Device: "auto", AutoLockTimeoutSecs: 0, PCRPollSecs: 30, TPMTimeoutSecs: 10}),
		},
		{
			name:    "unknown top-level key",
			content: "verbose = true\n[identity.tpm]\npcrs = [7]\n",
			wantErr: []string{`unknown key "verbose"`},
		},
		{
			name:    "unknown top-level table reported once",
			content: "[logging]\nlevel = \"debug\"\nfile = \"/tmp/x\"\n",
			wantErr: []string{`unknown key "logging"`},
		},
		{
			name:    "unknown nested key",
			content: "[identity.tpm]\npcr = [7]\n",
			wantErr: []string{`unknown key "identity.tpm.pcr"`},
		},
		{
			name:    "several unknown keys",
			content: "[identity]\nssh = 1\n[identity.tpm]\ndevise = \"auto\"\n",
			wantErr: []string{`unknown keys "identity.ssh", "identity.tpm.devise"`},
		},
		{
			name:    "enabled false",
			content: "[identity.tpm]\nenabled = false\n",
			wantErr: []string{"identity.tpm.enabled = false: icn-agent only serves TPM-sealed identities; remove the line or set it to true"},
		},
		{
			name:    "bad pcr 24",
			content: "[identity.tpm]\npcrs = [0, 24]\n",
			wantErr: []string{"identity.tpm.pcrs: PCR 24 out of range 0..23"},
		},
		{
			name:    "per-identity settings",
			content: "audit = false\nnotify_command = \"logger -t icn\"\ndesktop_notify = false\n\n[identity.tpm]\npcrs = [0, 7]\n\n[identities.work]\nconfirm = true\nnotify = true\n\n[identities.\"git-sign\"]\nnotify = true\n",
			want: controlConfig(func(c *Config) {
				c.Audit, c.NotifyCommand, c.DesktopNotify = false, "logger -t icn", false
				c.Identities = map[string]Identity{"work": {Confirm: true, Notify: true}, "git-sign": {Notify: true}}
			}),
		},
		{
			name:    "unknown per-identity key",
			content: "[identities.work]\nconfrim = true\n",
			wantErr: []string{`unknown key "identities.work.confrim"`},
		},
		{
			name:    "bad identity name",
			content: "[identities.\"a/b\"]\nconfirm = true\n",
			wantErr: []string{`identities."a/b": not an identity name`},
		},
		{
			name:    "negative pcr",
			content: "[identity.tpm]\npcrs = [-1]\n",
			wantErr: []string{"identity.tpm.pcrs: PCR -1 out of range 0..23"},
		},
		{
			name:    "duplicate pcr",
			content: "[identity.tpm]\npcrs = [7, 0, 7]\n",
			wantErr: []string{"identity.tpm.pcrs: PCR 7 listed twice"},
		},
		{
			name:    "empty pcrs",
			content: "[identity.tpm]\npcrs = []\n",
			wantErr: []string{"identity.tpm.pcrs is empty"},
		},
		{
			name:    "negative timeout",
			content: "[identity.tpm]\nauto_lock_timeout_secs = -5\n",
			wantErr: []string{"identity.tpm.auto_lock_timeout_secs = -5: must be 0 or more"},
		},
		{
			name:    "zero pcr poll",
			content: "[identity.tpm]\npcr_poll_secs = 0\n",
			wantErr: []string{"identity.tpm.pcr_poll_secs = 0: must be at least 1"},
		},
		{
			name:    "zero tpm timeout",
			content: "[identity.tpm]\ntpm_timeout_secs = 0\n",
			wantErr: []string{"identity.tpm.tpm_timeout_secs = 0: must be 1 to 600"},
		},
		{
			name:    "huge tpm timeout",
			content: "[identity.tpm]\ntpm_timeout_secs = 601\n",
			wantErr: []string{"identity.tpm.tpm_timeout_secs = 601: must be 1 to 600"},
		},
		{
			name:    "timeout overflowing a duration",
			content: "[identity.tpm]\nauto_lock_timeout_secs = 9223372037\n",
			wantErr: []string{"identity.tpm.auto_lock_timeout_secs = 9223372037: must be at most 9223372036"},
		},
		{
			name:    "empty device",
			content: "[identity.tpm]\ndevice = \" \"\n",
			wantErr: []string{"identity.tpm.device is empty"},
		},
		{
			name:    "syntax error",
			content: "[identity.tpm]\npcrs = [0, 7]\ndevice = \"auto\n",
			wantErr: []string{"line 3: "},
		},
		{
			name:    "wrong type",
			content: "[identity.tpm]\n\npcrs = \"0,7\"\n",
			wantErr: []string{"line 3: incompatible types: TOML value has type string; destination has type slice (key identity.tpm.pcrs)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, explicit := range []bool{false, true} {
				got, err := Load(path, explicit)
				if tt.wantErr != nil {
					if err == nil {
						t.Fatalf("Load(explicit=%v) = %+v; want error", explicit, got)
					}
					msg := err.Error()
					prefix := "config: " + path + ": "
					if !strings.HasPrefix(msg, prefix) {
						t.Errorf("error %q does not start with %q", msg, prefix)
					}
					for _, want := range tt.wantErr {
						if !strings.Contains(msg, want) {
							t.Errorf("error %q does not contain %q", msg, want)
						}
					}
					continue
				}
				if err != nil {
					t.Fatalf("Load(explicit=%v): %v", explicit, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("Load(explicit=%v) = %+v; want %+v", explicit, got, tt.want)
				}
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	tests := []struct {
		name     string
		explicit bool
		wantErr  bool
	}{
		{"missing default file gives defaults", false, false},
		{"missing explicit file is an error", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "nope", "config.toml")
			got, err := Load(path, tt.explicit)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if !reflect.DeepEqual(got, Default()) {
					t.Fatalf("Load = %+v; want defaults", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load = %+v; want error", got)
			}
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("error %v does not wrap os.ErrNotExist", err)
			}
			if !strings.HasPrefix(err.Error(), "config: ") || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q lacks prefix or path", err)
			}
		})
	}
}

func TestLoadConfigUnreadable(t *testing.T) {
	// A directory where the file should be is an error even at the default
	// path: only a missing file means "use the defaults".
	path := t.TempDir()
	if _, err := Load(path, false); err == nil {
		t.Fatal("Load on a directory succeeded")
	}
}

// A config path that names a FIFO, a device or a huge file is an error
// naming it, at once: reading a FIFO would block until a writer comes,
// and /dev/zero never ends.
func TestLoadConfigNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "config.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.toml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("# padding\n"), maxConfigFile/10+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want error
	}{
		{fifo, safefile.ErrNotRegular},
		{zero, safefile.ErrNotRegular},
		{big, safefile.ErrTooLarge},
	} {
		for _, explicit := range []bool{false, true} {
			done := make(chan error, 1)
			go func() {
				_, err := Load(tt.path, explicit)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.path) {
					t.Errorf("Load(%s, %v) = %v; want %v naming the path", tt.path, explicit, err, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Load(%s) still blocked after 10 s", tt.path)
			}
		}
	}
}

func TestTPMTimeout(t *testing.T) {
	if got := Default().Identity.TPM.TPMTimeout(); got != 10*time.Second {
		t.Errorf("default TPMTimeout = %v; want 10s", got)
	}
	if got := (TPM{TPMTimeoutSecs: 3}).TPMTimeout(); got != 3*time.Second {
		t.Errorf("TPMTimeout(3 s) = %v", got)
	}
}

func TestDefaultConfig(t *testing.T) {
	c := Default()
	want := TPM{Enabled: true, PCRs: []int{0, 7}, Device: "auto", AutoLockTimeoutSecs: 300, PCRPollSecs: 30, TPMTimeoutSecs: 10}
	if !reflect.DeepEqual(c.Identity.TPM, want) {
		t.Fatalf("Default().Identity.TPM = %+v; want %+v", c.Identity.TPM, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// Each call returns its own PCR slice.
	c.Identity.TPM.PCRs[0] = 5
	if Default().Identity.TPM.PCRs[0] != 0 {
		t.Fatal("Default shares its PCR slice between calls")
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Identity.TPM.PCRs = []int{7, 7}
	err := c.Validate()
	if err == nil || err.Error() != "config: identity.tpm.pcrs: PCR 7 listed twice" {
		t.Fatalf("Validate = %v", err)
	}
}

func TestDefaultConfigPath(t *testing.T) {
	t.Cleanup(xdg.Reload) // runs after Setenv restores the variable
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	xdg.Reload()
	if got, want := DefaultPath(), filepath.Join(dir, "icn-agent", "config.toml"); got != want {
		t.Fatalf("DefaultPath() = %q; want %q", got, want)
	}
}

func TestAutoLockTimeout(t *testing.T) {
	tests := []struct {
		secs int
		want time.Duration
	}{
		{0, 0},
		{1, time.Second},
		{300, 5 * time.Minute},
		{86400, 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := (TPM{AutoLockTimeoutSecs: tt.secs}).AutoLockTimeout(); got != tt.want {
			t.Errorf("AutoLockTimeout(%d s) = %v; want %v", tt.secs, got, tt.want)
		}
	}
}
