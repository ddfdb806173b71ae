// Package config loads the daemon's settings from, in order of precedence,
// command-line flags, ATTESTATION_* environment variables, a YAML file,
// and built-in defaults.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Duration is a time.Duration written as "10s" in YAML.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler (sigs.k8s.io/yaml goes through JSON).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration like \"10s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Config is every setting of attestationd.
type Config struct {
	// Listen is the API's address (Connect, gRPC, REST, metrics).
	Listen string `json:"listen"`
	// DataDir holds the database and the generated admin token.
	DataDir string `json:"data_dir"`
	// AdminToken is the operators' static bearer token; when empty one is
	// generated into DataDir/admin-token on first start.
	AdminToken string `json:"admin_token,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`
	// LogFormat is text or json.
	LogFormat string `json:"log_format"`
	// EventHandlerTimeout bounds each event handler call.
	EventHandlerTimeout Duration `json:"event_handler_timeout"`
	// Extensions holds each extension's own settings, by extension name,
	// as written in the file (only the file sets them).
	Extensions map[string]json.RawMessage `json:"extensions,omitempty"`
}

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		Listen:              ":9000",
		DataDir:             "./var",
		LogLevel:            "info",
		LogFormat:           "text",
		EventHandlerTimeout: Duration(10 * time.Second),
	}
}

// setting ties a config field to its flag, variable and file key.
type setting struct {
	flag, env, key, help string
	get                  func(*Config) string
	set                  func(*Config, string) error
}

var settings = []setting{
	{"listen", "ATTESTATION_LISTEN", "listen", "address of the API listener (Connect, gRPC, REST, /metrics)",
		func(c *Config) string { return c.Listen }, func(c *Config, v string) error { c.Listen = v; return nil }},
	{"data-dir", "ATTESTATION_DATA_DIR", "data_dir", "directory of the SQLite database and the generated admin token",
		func(c *Config) string { return c.DataDir }, func(c *Config, v string) error { c.DataDir = v; return nil }},
	{"admin-token", "ATTESTATION_ADMIN_TOKEN", "admin_token", "operators' static bearer token (default: generated into DATA_DIR/admin-token); prefer the variable, flags show in ps",
		func(c *Config) string { return "" }, func(c *Config, v string) error { c.AdminToken = v; return nil }},
	{"log-level", "ATTESTATION_LOG_LEVEL", "log_level", "log level: debug, info, warn or error",
		func(c *Config) string { return c.LogLevel }, func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{"log-format", "ATTESTATION_LOG_FORMAT", "log_format", "log format: text or json",
		func(c *Config) string { return c.LogFormat }, func(c *Config, v string) error { c.LogFormat = v; return nil }},
	{"event-handler-timeout", "ATTESTATION_EVENT_HANDLER_TIMEOUT", "event_handler_timeout", "time limit of each event handler call",
		func(c *Config) string { return time.Duration(c.EventHandlerTimeout).String() },
		func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			c.EventHandlerTimeout = Duration(d)
			return err
		}},
}

// ConfigFlag names the config file flag; ConfigEnv its variable.
const (
	ConfigFlag = "config"
	ConfigEnv  = "ATTESTATION_CONFIG"
)

// AddFlags defines the daemon's flags on fs, with the defaults in their help.
func AddFlags(fs *pflag.FlagSet) {
	def := Default()
	fs.String(ConfigFlag, "", "YAML config file (env "+ConfigEnv+")")
	for _, s := range settings {
		fs.String(s.flag, s.get(&def), fmt.Sprintf("%s (env %s, file key %s)", s.help, s.env, s.key))
	}
}

// Help describes the sources and their precedence, for --help and errors.
const Help = `Settings come from flags, then ATTESTATION_* environment variables, then the
YAML file named by --config or ATTESTATION_CONFIG, then built-in defaults; the
first that sets a value wins.`

// Load builds the config from the parsed flags, the environment (getenv)
// and the config file.
func Load(fs *pflag.FlagSet, getenv func(string) string) (Config, error) {
	cfg := Default()
	path, _ := fs.GetString(ConfigFlag)
	if path == "" {
		path = getenv(ConfigEnv)
	}
	if path != "" {
		if err := cfg.loadFile(path); err != nil {
			return Config{}, err
		}
	}
	for _, s := range settings {
		if v := getenv(s.env); v != "" {
			if err := s.set(&cfg, v); err != nil {
				return Config{}, fmt.Errorf("%s=%q: %w", s.env, v, err)
			}
		}
		if f := fs.Lookup(s.flag); f != nil && f.Changed {
			if err := s.set(&cfg, f.Value.String()); err != nil {
				return Config{}, fmt.Errorf("--%s=%q: %w", s.flag, f.Value.String(), err)
			}
		}
	}
	return cfg, cfg.Validate()
}

func (c *Config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// Validate checks every setting and says what is wrong with the first bad one.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: want HOST:PORT or :PORT: %w", c.Listen, err)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return errors.New("data_dir: must not be empty")
	}
	if _, err := c.SlogLevel(); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log_format %q: want text or json", c.LogFormat)
	}
	if c.EventHandlerTimeout <= 0 {
		return fmt.Errorf("event_handler_timeout %s: must be positive", time.Duration(c.EventHandlerTimeout))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return errors.New("admin_token: must be at least 16 characters")
	}
	return nil
}

// SlogLevel returns the log level.
func (c *Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}
