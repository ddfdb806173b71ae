package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, args []string, env map[string]string, file string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("attestationd", pflag.ContinueOnError)
	AddFlags(fs)
	if file != "" {
		path := filepath.Join(t.TempDir(), "attestationd.yaml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs, func(k string) string { return env[k] })
}

// with returns the defaults changed by f.
func with(f func(*Config)) Config {
	c := Default()
	f(&c)
	return c
}

func TestPrecedence(t *testing.T) {
	file := "listen: 127.0.0.1:7001\ndata_dir: /file\nlog_level: warn\nevent_handler_timeout: 3s\n"
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want Config
	}{
		{
			name: "defaults",
			want: Default(),
		},
		{
			name: "file over default",
			file: file,
			want: with(func(c *Config) {
				c.Listen, c.DataDir, c.LogLevel, c.EventHandlerTimeout = "127.0.0.1:7001", "/file", "warn", Duration(3*time.Second)
			}),
		},
		{
			name: "env over file",
			file: file,
			env:  map[string]string{"ATTESTATION_LISTEN": ":7002", "ATTESTATION_EVENT_HANDLER_TIMEOUT": "4s"},
			want: with(func(c *Config) {
				c.Listen, c.DataDir, c.LogLevel, c.EventHandlerTimeout = ":7002", "/file", "warn", Duration(4*time.Second)
			}),
		},
		{
			name: "flag over env over file",
			file: file,
			args: []string{"--listen", ":7003", "--data-dir", "/flag"},
			env:  map[string]string{"ATTESTATION_LISTEN": ":7002", "ATTESTATION_DATA_DIR": "/env", "ATTESTATION_LOG_LEVEL": "debug"},
			want: with(func(c *Config) {
				c.Listen, c.DataDir, c.LogLevel, c.EventHandlerTimeout = ":7003", "/flag", "debug", Duration(3*time.Second)
			}),
		},
		{
			name: "admin token from env",
			env:  map[string]string{"ATTESTATION_ADMIN_TOKEN": "0123456789abcdef0123"},
			want: func() Config { c := Default(); c.AdminToken = "0123456789abcdef0123"; return c }(),
		},
		{
			name: "config file named by env",
			env:  map[string]string{},
			file: "listen: :7004\n",
			want: func() Config { c := Default(); c.Listen = ":7004"; return c }(),
		},
		{
			name: "attestation settings",
			file: "ek_policy: allowlist\nek_allowlist: [" + strings.Repeat("ab", 32) + "]\npcr_policy: {worker: {7: '" + strings.Repeat("0", 64) + "'}}\nheartbeat_interval: 10s\n",
			args: []string{"--allow-no-tpm", "--public-url", "https://attest.example:9443", "--challenge-ttl", "5s"},
			env:  map[string]string{"ATTESTATION_EK_ROOTS": "/etc/ek-roots", "ATTESTATION_CONFIG_TOKEN_TTL": "1h"},
			want: with(func(c *Config) {
				c.EKPolicy, c.EKAllowlist = EKPolicyAllowlist, []string{strings.Repeat("ab", 32)}
				c.PCRPolicy = map[string]map[int]string{"worker": {7: strings.Repeat("0", 64)}}
				c.HeartbeatInterval, c.AllowNoTPM, c.PublicURL = Duration(10*time.Second), true, "https://attest.example:9443"
				c.ChallengeTTL, c.EKRoots, c.ConfigTokenTTL = Duration(5*time.Second), "/etc/ek-roots", Duration(time.Hour)
			}),
		},
		{
			name: "tftp settings",
			file: "tftp_listen: ':6969'\nboot_assets: /file/boot\nipxe_dir: /file/ipxe\n",
			args: []string{"--tftp-listen", "127.0.0.1:69"},
			env:  map[string]string{"ATTESTATION_IPXE_DIR": "/env/ipxe"},
			want: with(func(c *Config) {
				c.TFTPListen, c.BootAssets, c.IPXEDir = "127.0.0.1:69", "/file/boot", "/env/ipxe"
			}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := load(t, tc.args, tc.env, tc.file)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got.Extensions == nil {
				got.Extensions = tc.want.Extensions
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestConfigEnvNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("listen: :7005\n"), 0o600)
	fs := pflag.NewFlagSet("attestationd", pflag.ContinueOnError)
	AddFlags(fs)
	fs.Parse(nil)
	got, err := Load(fs, func(k string) string {
		if k == ConfigEnv {
			return path
		}
		return ""
	})
	if err != nil || got.Listen != ":7005" {
		t.Fatalf("got %+v, %v; want listen :7005 from the file named by %s", got, err, ConfigEnv)
	}
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string
		wantErr string
	}{
		{name: "unknown file key", file: "listne: :9000\n", wantErr: "listne"},
		{name: "file not yaml", file: "listen: [\n", wantErr: "config file"},
		{name: "bad duration in file", file: "event_handler_timeout: soon\n", wantErr: `"soon"`},
		{name: "bad listen flag", args: []string{"--listen", "9000"}, wantErr: "listen \"9000\""},
		{name: "bad log level env", env: map[string]string{"ATTESTATION_LOG_LEVEL": "loud"}, wantErr: "log_level"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: "log_format"},
		{name: "bad timeout env", env: map[string]string{"ATTESTATION_EVENT_HANDLER_TIMEOUT": "10"}, wantErr: "ATTESTATION_EVENT_HANDLER_TIMEOUT"},
		{name: "negative timeout", args: []string{"--event-handler-timeout", "-1s"}, wantErr: "must be positive"},
		{name: "short admin token", env: map[string]string{"ATTESTATION_ADMIN_TOKEN": "short"}, wantErr: "at least 16"},
		{name: "empty data dir", file: "data_dir: ''\n", wantErr: "data_dir"},
		{name: "bad ek policy", args: []string{"--ek-policy", "trust"}, wantErr: "ek_policy \"trust\""},
		{name: "bad allowlist entry", file: "ek_allowlist: [abc]\n", wantErr: "ek_allowlist"},
		{name: "PCR out of range", file: "pcr_policy: {worker: {24: " + strings.Repeat("0", 64) + "}}\n", wantErr: "PCR 24"},
		{name: "PCR value not hex", file: "pcr_policy: {worker: {7: zz}}\n", wantErr: "PCR 7"},
		{name: "bad public URL", args: []string{"--public-url", "attest.example"}, wantErr: "public_url"},
		{name: "bad allow-no-tpm env", env: map[string]string{"ATTESTATION_ALLOW_NO_TPM": "maybe"}, wantErr: "ATTESTATION_ALLOW_NO_TPM"},
		{name: "zero challenge ttl", args: []string{"--challenge-ttl", "0s"}, wantErr: "challenge_ttl"},
		{name: "bad tftp listen", args: []string{"--tftp-listen", "69"}, wantErr: "tftp_listen \"69\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.args, tc.env, tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestExtensionSettings(t *testing.T) {
	got, err := load(t, nil, nil, "extensions:\n  webhook:\n    targets:\n      - url: http://127.0.0.1:1/hook\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"targets":[{"url":"http://127.0.0.1:1/hook"}]}`; string(got.Extensions["webhook"]) != want {
		t.Errorf("got %s, want %s", got.Extensions["webhook"], want)
	}
}

func TestMissingFile(t *testing.T) {
	fs := pflag.NewFlagSet("attestationd", pflag.ContinueOnError)
	AddFlags(fs)
	fs.Parse([]string{"--config", filepath.Join(t.TempDir(), "absent.yaml")})
	if _, err := Load(fs, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("got %v, want an error naming the missing file", err)
	}
}

func TestBootAssetsDir(t *testing.T) {
	c := Default()
	c.DataDir = "/var/lib/attestation"
	if got, want := c.BootAssetsDir(), "/var/lib/attestation/boot"; got != want {
		t.Errorf("BootAssetsDir() = %q, want %q", got, want)
	}
	c.BootAssets = "/srv/boot"
	if got, want := c.BootAssetsDir(), "/srv/boot"; got != want {
		t.Errorf("BootAssetsDir() = %q, want %q", got, want)
	}
}
