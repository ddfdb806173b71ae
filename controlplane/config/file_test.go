package config

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// loadPath loads the config file at path as --config does, nothing else set.
func loadPath(t *testing.T, path string) error {
	t.Helper()
	fs := pflag.NewFlagSet("attestationd", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	_, err := Load(fs, func(string) string { return "" })
	return err
}

// TestFileErrors: every error about the config file starts with the file,
// the line and the key (a dotted path for a nested one), and says what is
// wrong in YAML's terms.
func TestFileErrors(t *testing.T) {
	pcr := strings.Repeat("0", 64)
	tests := []struct {
		name, file string
		// want is the message, FILE standing for the file's path; one
		// ending in "..." is the message's start.
		want string
	}{
		{"unknown key", "listen: :9000\ndata_dir: /d\nbogus_key: 1\n",
			`FILE:3: unknown key "bogus_key" (known keys: listen, data_dir, database, admin_token, ...`},
		{"misspelt key", "listne: :9000\n",
			`FILE:1: unknown key "listne" (did you mean listen?)`},
		{"retired key", "listen: :9000\nmax_challenges_per_source: 64\n",
			`FILE:2: max_challenges_per_source is no longer a setting: attestation challenges are sealed tokens the agents carry and take no room on the control plane; register_rate bounds them per source; remove it`},
		{"nested unknown key", "pcr_policy:\n  worker:\n    7: " + pcr + "\n    seven: " + pcr + "\n",
			`FILE:4: pcr_policy.worker.seven: want a whole number as the key, got "seven"`},
		{"key set twice", "listen: :1\ndata_dir: /d\nlisten: :2\n",
			`FILE:3: listen: set twice (first at line 1)`},
		{"nested key set twice", "dhcp_reservations:\n  52:54:00:00:00:01: 10.0.0.5\n  52:54:00:00:00:01: 10.0.0.6\n",
			`FILE:3: dhcp_reservations.52:54:00:00:00:01: set twice (first at line 2)`},
		{"bad duration", "listen: :9000\nevent_handler_timeout: banana\n",
			`FILE:2: event_handler_timeout: invalid duration "banana" (use 10s, 1m30s, ...)`},
		{"duration without unit", "challenge_ttl: 60\n",
			`FILE:1: challenge_ttl: invalid duration "60" (use 10s, 1m30s, ...)`},
		{"string for a number", "register_burst: many\n",
			`FILE:1: register_burst: "many" is not a whole number`},
		{"string for a boolean", "allow_no_tpm: maybe\n",
			`FILE:1: allow_no_tpm: "maybe": want true or false`},
		{"list for a string", "log_level: info\nlisten: [a, b]\n",
			`FILE:2: listen: want a string, got a list`},
		{"mapping for a duration", "session_ttl: {minutes: 5}\n",
			`FILE:1: session_ttl: want a duration like 10s or 1m30s, got a mapping (key: value)`},
		{"mapping for a list", "ek_allowlist: {a: b}\n",
			`FILE:1: ek_allowlist: want a list, got a mapping (key: value)`},
		{"list for a nested string", "pcr_policy:\n  worker:\n    7: [a]\n",
			`FILE:3: pcr_policy.worker.7: want a string, got a list`},
		{"nothing for a nested string", "pcr_policy:\n  worker:\n    7:\n",
			`FILE:3: pcr_policy.worker.7: want a string, got nothing`},
		{"list for extensions", "extensions:\n  - webhook\n",
			`FILE:2: extensions: want a mapping (key: value), got a list`},
		{"bad value", "log_format: xml\n",
			`FILE:1: log_format: "xml": want text or json`},
		{"bad nested value", "pcr_policy:\n  worker:\n    7: zz\n",
			`FILE:3: pcr_policy.worker.7: "zz" is not a SHA-256 value (64 hex digits; a PCR of role worker)`},
		{"PCR index out of range", "pcr_policy: {worker: {24: '" + pcr + "'}}\n",
			`FILE:1: pcr_policy.worker.24: PCR 24 out of range 0..23`},
		{"bad role", "\npcr_policy:\n  Worker: {7: '" + pcr + "'}\n",
			`FILE:3: pcr_policy.Worker: "Worker" is not a role (lower-case letters, digits, '-' or '_', starting with a letter)`},
		{"bad list element", "ek_allowlist:\n  - " + strings.Repeat("ab", 32) + "\n  - abc\n",
			`FILE:3: ek_allowlist[1]: "abc" is not an EK fingerprint (64 hex digits)`},
		{"bad empty value", "data_dir: ''\n",
			`FILE:1: data_dir: must not be empty`},
		{"TLS certificate without key", "listen: :9000\ntls_cert: /etc/attestation/tls.crt\n",
			`FILE:2: tls_cert: set tls_key too (the certificate's private key)`},
		{"bad YAML syntax", "listen: :9000\nek_allowlist: [abc\n",
			`FILE:2: YAML syntax: did not find expected ',' or ']'`},
		{"bad YAML syntax on the first line", "listen: [\n",
			`FILE:2: YAML syntax: did not find expected node content`},
		{"list item in a mapping", "listen: :9000\n- data_dir: /d\n",
			`FILE:2: YAML syntax: did not find expected key`},
		{"unclosed quote", "listen: :9000\ndata_dir: \"/d\n",
			`FILE:2: YAML syntax: found unexpected end of stream`},
		{"bad indentation", "listen: :9000\n  data_dir: /d\n",
			`FILE:2: YAML syntax: mapping values are not allowed in this context`},
		{"not a mapping", "- listen: :9000\n",
			`FILE:1: want settings as key: value lines, got a list`},
		{"two documents", "listen: :9000\n---\nlisten: :9001\n",
			`FILE:2: a second YAML document (after ---): put every setting in one`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.file)
			err := loadPath(t, path)
			want := strings.ReplaceAll(tc.want, "FILE", path)
			if err == nil {
				t.Fatalf("got no error, want %s", want)
			}
			if prefix, ok := strings.CutSuffix(want, "..."); ok {
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Fatalf("got error\n%v\nwant one starting\n%s", err, prefix)
				}
				return
			}
			if err.Error() != want {
				t.Fatalf("got error\n%v\nwant\n%s", err, want)
			}
		})
	}
}

// TestUnreadableFile: a config file that cannot be read is named.
func TestUnreadableFile(t *testing.T) {
	for name, path := range map[string]string{
		"missing":   t.TempDir() + "/absent.yaml",
		"directory": t.TempDir(),
	} {
		t.Run(name, func(t *testing.T) {
			err := loadPath(t, path)
			if err == nil || !strings.HasPrefix(err.Error(), "config file: ") || !strings.Contains(err.Error(), path) {
				t.Fatalf("got error %v, want one naming the config file %s", err, path)
			}
		})
	}
}

// TestOrigin: Origin names the file's line of a key and its sections,
// or the flag or variable that set it over the file.
func TestOrigin(t *testing.T) {
	path := writeFile(t, "listen: :9000\nextensions:\n  webhook:\n    max_attempts: 3\ndata_dir: /d\n")
	fs := pflag.NewFlagSet("attestationd", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--config", path, "--data-dir", "/flag"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(fs, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"listen":                          path + ":1: listen",
		"extensions.webhook":              path + ":3: extensions.webhook",
		"extensions.webhook.max_attempts": path + ":4: extensions.webhook.max_attempts",
		"extensions.webhook.targets":      path + ":3: extensions.webhook.targets",
		"data_dir":                        "--data-dir",
		"log_level":                       "log_level",
	} {
		if got := cfg.Origin(key); got != want {
			t.Errorf("Origin(%q) = %q, want %q", key, got, want)
		}
	}
}
