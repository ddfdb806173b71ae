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
			want: Config{Listen: "127.0.0.1:7001", DataDir: "/file", LogLevel: "warn", LogFormat: "text", EventHandlerTimeout: Duration(3 * time.Second)},
		},
		{
			name: "env over file",
			file: file,
			env:  map[string]string{"ATTESTATION_LISTEN": ":7002", "ATTESTATION_EVENT_HANDLER_TIMEOUT": "4s"},
			want: Config{Listen: ":7002", DataDir: "/file", LogLevel: "warn", LogFormat: "text", EventHandlerTimeout: Duration(4 * time.Second)},
		},
		{
			name: "flag over env over file",
			file: file,
			args: []string{"--listen", ":7003", "--data-dir", "/flag"},
			env:  map[string]string{"ATTESTATION_LISTEN": ":7002", "ATTESTATION_DATA_DIR": "/env", "ATTESTATION_LOG_LEVEL": "debug"},
			want: Config{Listen: ":7003", DataDir: "/flag", LogLevel: "debug", LogFormat: "text", EventHandlerTimeout: Duration(3 * time.Second)},
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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := load(t, tc.args, tc.env, tc.file)
			if err != nil {
				t.Fatalf("Load: %v", err)
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
