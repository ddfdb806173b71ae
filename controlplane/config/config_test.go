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
		args = append(args, "--config", writeFile(t, file))
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs, func(k string) string { return env[k] })
}

// writeFile writes a config file and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "attestationd.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
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
			name: "database from the file, then the variable",
			file: "database: postgresql://app@db.example/attestation\n",
			env:  map[string]string{"ATTESTATION_DATABASE": "postgres://app@db2.example/attestation?sslmode=verify-full"},
			want: with(func(c *Config) { c.Database = "postgres://app@db2.example/attestation?sslmode=verify-full" }),
		},
		{
			name: "empty file",
			file: "# nothing set yet\n",
			want: Default(),
		},
		{
			name: "no value keeps the default",
			file: "data_dir:\nlisten: ~\n",
			want: Default(),
		},
		{
			name: "anchor and alias",
			file: "challenge_ttl: &ttl 2m\nsession_ttl: *ttl\n",
			want: with(func(c *Config) { c.ChallengeTTL, c.SessionTTL = Duration(2*time.Minute), Duration(2*time.Minute) }),
		},
		{
			name: "all-digit PCR value unquoted",
			file: "pcr_policy:\n  worker:\n    7: " + strings.Repeat("1", 64) + "\n",
			want: with(func(c *Config) { c.PCRPolicy = map[string]map[int]string{"worker": {7: strings.Repeat("1", 64)}} }),
		},
		{
			name: "file over default, flag over file, bad file value overridden",
			file: "log_format: xml\nregister_rate: 2.5\nregister_burst: 0x10\n",
			args: []string{"--log-format", "json"},
			env:  map[string]string{"ATTESTATION_REGISTER_BURST": "16"},
			want: with(func(c *Config) { c.LogFormat, c.RegisterRate, c.RegisterBurst = "json", 2.5, 16 }),
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
		{
			name: "oidc settings",
			file: "oidc_issuer: https://kc.example/realms/infra\noidc_role_map: {/ops: operator}\noidc_role_claims: [groups]\n",
			args: []string{"--oidc-role-claims", "realm_access.roles, groups", "--metrics-auth"},
			env:  map[string]string{"ATTESTATION_OIDC_AUDIENCE": "attestation-api"},
			want: with(func(c *Config) {
				c.OIDCIssuer, c.OIDCAudience, c.MetricsAuth = "https://kc.example/realms/infra", "attestation-api", true
				c.OIDCRoleClaims = []string{"realm_access.roles", "groups"}
				c.OIDCRoleMap = map[string]string{"/ops": "operator"}
			}),
		},
		{
			name: "tls and CA settings",
			file: "tls_cert: /file/tls.crt\ntls_key: /file/tls.key\nca_cert: /file/ca.crt\nca_key: /file/ca.key\n",
			args: []string{"--tls-cert", "/flag/tls.crt"},
			env:  map[string]string{"ATTESTATION_CA_KEY": "/env/ca.key"},
			want: with(func(c *Config) {
				c.TLSCert, c.TLSKey = "/flag/tls.crt", "/file/tls.key"
				c.CACert, c.CAKey = "/file/ca.crt", "/env/ca.key"
			}),
		},
		{
			name: "tls self-signed",
			args: []string{"--tls-self-signed"},
			want: with(func(c *Config) { c.TLSSelfSigned = true }),
		},
		{
			name: "tls self-signed from the file",
			file: "tls_self_signed: true\n",
			want: with(func(c *Config) { c.TLSSelfSigned = true }),
		},
		{
			name: "oidc role map flag",
			args: []string{"--oidc-issuer", "http://127.0.0.1:5556", "--oidc-role-map", "/ops=operator,/admins=admin"},
			want: with(func(c *Config) {
				c.OIDCIssuer = "http://127.0.0.1:5556"
				c.OIDCRoleMap = map[string]string{"/ops": "operator", "/admins": "admin"}
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
			got.origin = origin{} // where settings came from: see TestFileErrors
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
		{name: "bad listen flag", args: []string{"--listen", "9000"}, wantErr: `--listen: "9000": want HOST:PORT or :PORT`},
		{name: "bad log level env", env: map[string]string{"ATTESTATION_LOG_LEVEL": "loud"}, wantErr: `ATTESTATION_LOG_LEVEL: "loud": want debug, info, warn or error`},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: `--log-format: "xml": want text or json`},
		{name: "bad timeout env", env: map[string]string{"ATTESTATION_EVENT_HANDLER_TIMEOUT": "10"}, wantErr: `ATTESTATION_EVENT_HANDLER_TIMEOUT: invalid duration "10" (use 10s, 1m30s, ...)`},
		{name: "bad timeout flag", args: []string{"--event-handler-timeout", "soon"}, wantErr: `--event-handler-timeout: invalid duration "soon" (use 10s, 1m30s, ...)`},
		{name: "negative timeout", args: []string{"--event-handler-timeout", "-1s"}, wantErr: "--event-handler-timeout: -1s: must be positive"},
		{name: "short admin token", env: map[string]string{"ATTESTATION_ADMIN_TOKEN": "short"}, wantErr: "ATTESTATION_ADMIN_TOKEN: must be at least 16 characters"},
		{name: "bad ek policy", args: []string{"--ek-policy", "trust"}, wantErr: `--ek-policy: "trust": want verify, allowlist or any`},
		{name: "bad public URL", args: []string{"--public-url", "attest.example"}, wantErr: `--public-url: "attest.example": want http://HOST[:PORT] or https://HOST[:PORT]`},
		{name: "bad allow-no-tpm env", env: map[string]string{"ATTESTATION_ALLOW_NO_TPM": "maybe"}, wantErr: `ATTESTATION_ALLOW_NO_TPM: "maybe": want true or false`},
		{name: "bad int flag", args: []string{"--register-burst", "many"}, wantErr: `--register-burst: "many" is not a whole number`},
		{name: "bad float env", env: map[string]string{"ATTESTATION_REGISTER_RATE": "fast"}, wantErr: `ATTESTATION_REGISTER_RATE: "fast" is not a number`},
		{name: "zero challenge ttl", args: []string{"--challenge-ttl", "0s"}, wantErr: "--challenge-ttl: 0s: must be positive"},
		{name: "bad tftp listen", args: []string{"--tftp-listen", "69"}, wantErr: `--tftp-listen: "69": want HOST:PORT or :PORT`},
		{name: "plain http issuer", args: []string{"--oidc-issuer", "http://kc.example/realms/infra"}, wantErr: `--oidc-issuer: "http://kc.example/realms/infra": want https://HOST[/PATH] (http only on loopback)`},
		{name: "bad role map pair", args: []string{"--oidc-role-map", "ops"}, wantErr: `--oidc-role-map: "ops": want VALUE=ROLE`},
		{name: "bad mapped role", args: []string{"--oidc-issuer", "https://kc.example", "--oidc-role-map", "/ops=root"}, wantErr: `--oidc-role-map: "root" is not a role: want viewer, operator or admin`},
		{name: "empty audience", args: []string{"--oidc-issuer", "https://kc.example", "--oidc-audience", ""}, wantErr: "--oidc-audience: must not be empty with an oidc_issuer"},
		{name: "tls cert without key", args: []string{"--tls-cert", "/etc/tls.crt"}, wantErr: "--tls-cert: set tls_key too (the certificate's private key)"},
		{name: "tls key without cert", env: map[string]string{"ATTESTATION_TLS_KEY": "/etc/tls.key"}, wantErr: "ATTESTATION_TLS_KEY: set tls_cert too (the key's certificate)"},
		{name: "self-signed with cert", args: []string{"--tls-self-signed", "--tls-cert", "/etc/tls.crt", "--tls-key", "/etc/tls.key"}, wantErr: "--tls-self-signed: not with tls_cert: serve your certificate or one the daemon's CA issues, not both"},
		{name: "bad self-signed env", env: map[string]string{"ATTESTATION_TLS_SELF_SIGNED": "yes please"}, wantErr: `ATTESTATION_TLS_SELF_SIGNED: "yes please": want true or false`},
		{name: "ca cert without key", env: map[string]string{"ATTESTATION_CA_CERT": "/etc/ca.crt"}, wantErr: "ATTESTATION_CA_CERT: set ca_key too (the CA's private key)"},
		{name: "ca key without cert", args: []string{"--ca-key", "/etc/ca.key"}, wantErr: "--ca-key: set ca_cert too (the CA's certificate)"},
		{name: "database not PostgreSQL", env: map[string]string{"ATTESTATION_DATABASE": "mysql://app:s3cret@db/attestation"},
			wantErr: "ATTESTATION_DATABASE: want a postgres:// or postgresql:// URL (PostgreSQL), or nothing for the SQLite file in data_dir"},
		{name: "database a file path", args: []string{"--database", "/var/lib/attestation/attestation.db"},
			wantErr: "--database: want a postgres:// or postgresql:// URL (PostgreSQL), or nothing for the SQLite file in data_dir"},
		{name: "database URL unparsable", env: map[string]string{"ATTESTATION_DATABASE": "postgres://app:s3%cret@db/attestation"},
			wantErr: "ATTESTATION_DATABASE: not a valid URL (check the escaping of special characters in the user or password: %40 for @)"},
		{name: "bad env over file", file: "log_format: json\n", env: map[string]string{"ATTESTATION_LOG_FORMAT": "yaml"}, wantErr: `ATTESTATION_LOG_FORMAT: "yaml": want text or json`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.args, tc.env, tc.file)
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("got error %v, want %s", err, tc.wantErr)
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
