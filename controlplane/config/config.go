// Package config loads the daemon's settings from, in order of precedence,
// command-line flags, ATTESTATION_* environment variables, a YAML file,
// and built-in defaults.
package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Duration is a time.Duration written as "10s" in YAML.
type Duration time.Duration

// Config is every setting of attestationd.
type Config struct {
	// Listen is the API's address (Connect, gRPC, REST, metrics).
	Listen string `yaml:"listen"`
	// DataDir holds the database and the generated admin token.
	DataDir string `yaml:"data_dir"`
	// Database is the PostgreSQL database to keep the state in, a
	// postgres:// or postgresql:// URL; empty: the SQLite file in
	// DataDir.
	Database string `yaml:"database"`
	// AdminToken is the operators' static bearer token; when empty one is
	// generated into DataDir/admin-token on first start.
	AdminToken string `yaml:"admin_token"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format"`
	// EventHandlerTimeout bounds each event handler call.
	EventHandlerTimeout Duration `yaml:"event_handler_timeout"`
	// Extensions holds each extension's own settings, by extension name,
	// as written in the file (only the file sets them).
	Extensions map[string]json.RawMessage `yaml:"extensions"`

	// PublicURL is the daemon's URL as agents reach it; config URLs start
	// with it. Empty: derived from the listen address.
	PublicURL string `yaml:"public_url"`
	// CACert and CAKey are the daemon's certificate authority, PEM files;
	// empty: DATA_DIR/ca.crt and DATA_DIR/ca.key, created on first start.
	// Its certificate is what agents pin (attestation.ca=).
	CACert string `yaml:"ca_cert"`
	CAKey  string `yaml:"ca_key"`
	// ConfigTokenKey is the file of the key config tokens are derived
	// with and attestation challenges sealed with (32 bytes in hex);
	// empty: DATA_DIR/config-token-key, created on first start. Every
	// instance over one database must have the same; it is kept out of the
	// database, so that a copy of the database yields no usable config URL
	// and no forgeable challenge.
	ConfigTokenKey string `yaml:"config_token_key"`
	// TLSCert and TLSKey, PEM files, serve the API over TLS; they are read
	// again on SIGHUP and when either changes.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TLSSelfSigned serves the API over TLS with a certificate the
	// daemon's CA issues into DATA_DIR/tls.crt and tls.key (development).
	TLSSelfSigned bool `yaml:"tls_self_signed"`
	// EKPolicy says which EKs may attest: verify (an EK certificate that
	// chains to EKRoots), allowlist (EKAllowlist or pre-registered EKs) or
	// any (development only).
	EKPolicy string `yaml:"ek_policy"`
	// EKRoots is a directory of the TPM manufacturers' CA certificates.
	EKRoots string `yaml:"ek_roots"`
	// EKAllowlist holds EK fingerprints accepted in allowlist mode (only
	// the file sets it).
	EKAllowlist []string `yaml:"ek_allowlist"`
	// AllowNoTPM accepts machines that report no TPM. They prove nothing:
	// for labs only.
	AllowNoTPM bool `yaml:"allow_no_tpm"`
	// PCRPolicy holds the expected SHA-256 PCR values by role, then by PCR
	// index, in hex (only the file sets it). A machine with that role whose
	// quote differs is refused.
	PCRPolicy map[string]map[int]string `yaml:"pcr_policy"`
	// ChallengeTTL is how long an attestation challenge can be answered.
	ChallengeTTL Duration `yaml:"challenge_ttl"`
	// SessionTTL is how long an agent session lasts without a heartbeat.
	SessionTTL Duration `yaml:"session_ttl"`
	// ConfigTokenTTL is how long a one-time config URL works.
	ConfigTokenTTL Duration `yaml:"config_token_ttl"`
	// HeartbeatInterval is how often agents heartbeat; a machine that has
	// not for three intervals gets node.heartbeat_missed.
	HeartbeatInterval Duration `yaml:"heartbeat_interval"`
	// NodeCertLifetime is how long a node certificate is valid; agents
	// renew theirs at two thirds of it.
	NodeCertLifetime Duration `yaml:"node_cert_lifetime"`

	// PXEInterface is the network interface DHCP for network boot serves;
	// empty: no DHCP server.
	PXEInterface string `yaml:"pxe_interface"`
	// DHCPMode is proxy (answer PXE clients only, beside the site's DHCP
	// server, handing out no addresses) or full.
	DHCPMode string `yaml:"dhcp_mode"`
	// DHCPRange is full mode's address pool, "FIRST-LAST" on the
	// interface's subnet.
	DHCPRange string `yaml:"dhcp_range"`
	// DHCPRouter and DHCPDNS are told to full mode's clients when set.
	DHCPRouter string   `yaml:"dhcp_router"`
	DHCPDNS    []string `yaml:"dhcp_dns"`
	// DHCPMaxUnknown caps full mode's leases to clients without a
	// reservation (0: no cap below the pool's size).
	DHCPMaxUnknown int `yaml:"dhcp_max_unknown"`
	// DHCPReservations give MACs their addresses in full mode (only the
	// file sets them).
	DHCPReservations map[string]string `yaml:"dhcp_reservations"`
	// PXERouterAdvertisements answers, on the PXE interface, the IPv6
	// router solicitations of the iPXE clients DHCP just answered, so
	// that iPXE does not wait for IPv6 routers where none advertises
	// (boot/ndp).
	PXERouterAdvertisements bool `yaml:"pxe_router_advertisements"`

	// TFTPListen is the TFTP server's UDP address; empty: no TFTP server.
	TFTPListen string `yaml:"tftp_listen"`
	// BootAssets is the directory of files served for network boot;
	// empty: DATA_DIR/boot.
	BootAssets string `yaml:"boot_assets"`
	// IPXEDir holds the iPXE binaries (Debian's ipxe package).
	IPXEDir string `yaml:"ipxe_dir"`
	// RegisterRate is how many Register calls a second one source address
	// (an IPv6 one by its /64) may make on average, after a burst of
	// RegisterBurst; 0: no limit.
	RegisterRate  float64 `yaml:"register_rate"`
	RegisterBurst int     `yaml:"register_burst"`

	// MaxRequestBytes caps every request body, and what a compressed one
	// decompresses to.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`

	// BootKernelArgs are added to the kernel command line of the agent
	// when a machine network-boots it, after attestation.url=.
	BootKernelArgs string `yaml:"boot_kernel_args"`

	// OIDCIssuer is the OIDC provider whose access tokens operators may
	// use beside the admin token (Keycloak: https://HOST/realms/REALM);
	// empty: none.
	OIDCIssuer string `yaml:"oidc_issuer"`
	// OIDCAudience must be in a token's aud, or be its azp.
	OIDCAudience string `yaml:"oidc_audience"`
	// OIDCRoleClaims are the dotted paths of the claims roles are read
	// from; empty: realm_access.roles, resource_access.<audience>.roles
	// and groups.
	OIDCRoleClaims []string `yaml:"oidc_role_claims"`
	// OIDCRoleMap maps claim values to roles (viewer, operator, admin);
	// a value that is a role's name needs no entry.
	OIDCRoleMap map[string]string `yaml:"oidc_role_map"`
	// MetricsAuth makes /metrics require a viewer's token.
	MetricsAuth bool `yaml:"metrics_auth"`

	// origin says where each setting came from, for errors.
	origin origin
}

// EK policies.
const (
	EKPolicyVerify    = "verify"
	EKPolicyAllowlist = "allowlist"
	EKPolicyAny       = "any"
)

// DHCP modes.
const (
	DHCPModeProxy = "proxy"
	DHCPModeFull  = "full"
)

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		Listen:                  ":9000",
		DataDir:                 "./var",
		LogLevel:                "info",
		LogFormat:               "text",
		EventHandlerTimeout:     Duration(10 * time.Second),
		EKPolicy:                EKPolicyVerify,
		ChallengeTTL:            Duration(60 * time.Second),
		SessionTTL:              Duration(15 * time.Minute),
		ConfigTokenTTL:          Duration(24 * time.Hour),
		HeartbeatInterval:       Duration(30 * time.Second),
		NodeCertLifetime:        Duration(24 * time.Hour),
		MaxRequestBytes:         1 << 20,
		RegisterRate:            5,
		RegisterBurst:           20,
		DHCPMode:                DHCPModeProxy,
		PXERouterAdvertisements: true,
		IPXEDir:                 "/usr/lib/ipxe",
		OIDCAudience:            "attestation",
	}
}

// setting ties a config field to its flag, variable and file key.
type setting struct {
	flag, env, key, help string
	get                  func(*Config) string
	set                  func(*Config, string) error
	// boolean flags take no value (--allow-no-tpm).
	boolean bool
}

// boolSetting is a setting of a bool field.
func boolSetting(flag, env, key, help string, field func(*Config) *bool) setting {
	return setting{flag: flag, env: env, key: key, help: help, boolean: true,
		get: func(c *Config) string { return strconv.FormatBool(*field(c)) },
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			*field(c) = b
			return nil
		}}
}

// list splits a comma-separated value, dropping empty items.
func list(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// intSetting is a setting of an int field.
func intSetting(flag, env, key, help string, field func(*Config) *int) setting {
	return setting{flag: flag, env: env, key: key, help: help,
		get: func(c *Config) string { return strconv.Itoa(*field(c)) },
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			*field(c) = n
			return nil
		}}
}

// duration is a setting of a Duration field.
func duration(flag, env, key, help string, field func(*Config) *Duration) setting {
	return setting{flag: flag, env: env, key: key, help: help,
		get: func(c *Config) string { return time.Duration(*field(c)).String() },
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("invalid duration %q (use 10s, 1m30s, ...)", v)
			}
			*field(c) = Duration(d)
			return nil
		}}
}

var settings = []setting{
	{flag: "listen", env: "ATTESTATION_LISTEN", key: "listen", help: "address of the API listener (Connect, gRPC, REST, /metrics)",
		get: func(c *Config) string { return c.Listen }, set: func(c *Config, v string) error { c.Listen = v; return nil }},
	{flag: "data-dir", env: "ATTESTATION_DATA_DIR", key: "data_dir", help: "directory of the SQLite database and the generated admin token",
		get: func(c *Config) string { return c.DataDir }, set: func(c *Config, v string) error { c.DataDir = v; return nil }},
	{flag: "database", env: "ATTESTATION_DATABASE", key: "database",
		help: "PostgreSQL database to keep the state in, for several daemons sharing it: postgres://USER@HOST/DB?sslmode=verify-full (the password in ~/.pgpass or PGPASSWORD rather than here; default: the SQLite file DATA_DIR/attestation.db)",
		get:  func(c *Config) string { return c.Database }, set: func(c *Config, v string) error { c.Database = v; return nil }},
	{flag: "admin-token", env: "ATTESTATION_ADMIN_TOKEN", key: "admin_token", help: "operators' static bearer token (default: generated into DATA_DIR/admin-token); prefer the variable, flags show in ps",
		get: func(c *Config) string { return "" }, set: func(c *Config, v string) error { c.AdminToken = v; return nil }},
	{flag: "log-level", env: "ATTESTATION_LOG_LEVEL", key: "log_level", help: "log level: debug, info, warn or error",
		get: func(c *Config) string { return c.LogLevel }, set: func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{flag: "log-format", env: "ATTESTATION_LOG_FORMAT", key: "log_format", help: "log format: text or json",
		get: func(c *Config) string { return c.LogFormat }, set: func(c *Config, v string) error { c.LogFormat = v; return nil }},
	duration("event-handler-timeout", "ATTESTATION_EVENT_HANDLER_TIMEOUT", "event_handler_timeout", "time limit of each event handler call",
		func(c *Config) *Duration { return &c.EventHandlerTimeout }),
	{flag: "public-url", env: "ATTESTATION_PUBLIC_URL", key: "public_url",
		help: "the daemon's URL as agents reach it, the base of config URLs (default: from the listen address)",
		get:  func(c *Config) string { return c.PublicURL }, set: func(c *Config, v string) error { c.PublicURL = v; return nil }},
	{flag: "ca-cert", env: "ATTESTATION_CA_CERT", key: "ca_cert",
		help: "PEM certificate of the daemon's CA, the one agents pin, with --ca-key (default: DATA_DIR/ca.crt, created on first start)",
		get:  func(c *Config) string { return c.CACert }, set: func(c *Config, v string) error { c.CACert = v; return nil }},
	{flag: "ca-key", env: "ATTESTATION_CA_KEY", key: "ca_key",
		help: "PEM private key of --ca-cert, mode 0600 (default: DATA_DIR/ca.key)",
		get:  func(c *Config) string { return c.CAKey }, set: func(c *Config, v string) error { c.CAKey = v; return nil }},
	{flag: "config-token-key", env: "ATTESTATION_CONFIG_TOKEN_KEY", key: "config_token_key",
		help: "file of the key config tokens are derived and challenges sealed with, 32 bytes in hex, mode 0600; the same file on every instance over one database (default: DATA_DIR/config-token-key, created on first start)",
		get:  func(c *Config) string { return c.ConfigTokenKey }, set: func(c *Config, v string) error { c.ConfigTokenKey = v; return nil }},
	{flag: "tls-cert", env: "ATTESTATION_TLS_CERT", key: "tls_cert",
		help: "PEM certificate (chain) to serve the API over TLS with, with --tls-key; read again on SIGHUP and when the file changes (default: no TLS)",
		get:  func(c *Config) string { return c.TLSCert }, set: func(c *Config, v string) error { c.TLSCert = v; return nil }},
	{flag: "tls-key", env: "ATTESTATION_TLS_KEY", key: "tls_key",
		help: "PEM private key of --tls-cert",
		get:  func(c *Config) string { return c.TLSKey }, set: func(c *Config, v string) error { c.TLSKey = v; return nil }},
	boolSetting("tls-self-signed", "ATTESTATION_TLS_SELF_SIGNED", "tls_self_signed",
		"serve the API over TLS with a certificate the daemon's CA issues into DATA_DIR/tls.crt for localhost and the listen and public URL hosts (development; not with --tls-cert)",
		func(c *Config) *bool { return &c.TLSSelfSigned }),
	{flag: "ek-policy", env: "ATTESTATION_EK_POLICY", key: "ek_policy",
		help: "which TPM endorsement keys may attest: verify (EK certificate chains to --ek-roots), allowlist (ek_allowlist in the file, or pre-registered) or any (development only)",
		get:  func(c *Config) string { return c.EKPolicy }, set: func(c *Config, v string) error { c.EKPolicy = v; return nil }},
	{flag: "ek-roots", env: "ATTESTATION_EK_ROOTS", key: "ek_roots",
		help: "directory of TPM manufacturer CA certificates (.pem, .crt, .cer, .der) that EK certificates must chain to",
		get:  func(c *Config) string { return c.EKRoots }, set: func(c *Config, v string) error { c.EKRoots = v; return nil }},
	boolSetting("allow-no-tpm", "ATTESTATION_ALLOW_NO_TPM", "allow_no_tpm", "accept machines that report no TPM (they prove nothing: labs only)",
		func(c *Config) *bool { return &c.AllowNoTPM }),
	duration("challenge-ttl", "ATTESTATION_CHALLENGE_TTL", "challenge_ttl", "how long an attestation challenge can be answered",
		func(c *Config) *Duration { return &c.ChallengeTTL }),
	duration("session-ttl", "ATTESTATION_SESSION_TTL", "session_ttl", "how long an agent session lasts without a heartbeat",
		func(c *Config) *Duration { return &c.SessionTTL }),
	duration("config-token-ttl", "ATTESTATION_CONFIG_TOKEN_TTL", "config_token_ttl", "how long a one-time config URL works",
		func(c *Config) *Duration { return &c.ConfigTokenTTL }),
	duration("heartbeat-interval", "ATTESTATION_HEARTBEAT_INTERVAL", "heartbeat_interval", "how often agents heartbeat; three intervals without one emit node.heartbeat_missed",
		func(c *Config) *Duration { return &c.HeartbeatInterval }),
	duration("node-cert-lifetime", "ATTESTATION_NODE_CERT_LIFETIME", "node_cert_lifetime", "how long a node certificate (the TPM-bound client certificate an agent gets after attesting) is valid; agents renew at two thirds of it",
		func(c *Config) *Duration { return &c.NodeCertLifetime }),
	{flag: "register-rate", env: "ATTESTATION_REGISTER_RATE", key: "register_rate",
		help: "agent Register calls a second one source address (IPv6: its /64) may make, after a burst of --register-burst; more get resource_exhausted (0: no limit)",
		get:  func(c *Config) string { return strconv.FormatFloat(c.RegisterRate, 'g', -1, 64) },
		set: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("%q is not a number", v)
			}
			c.RegisterRate = f
			return nil
		}},
	intSetting("register-burst", "ATTESTATION_REGISTER_BURST", "register_burst", "agent Register calls one source address may make at once before --register-rate applies",
		func(c *Config) *int { return &c.RegisterBurst }),
	{flag: "max-request-bytes", env: "ATTESTATION_MAX_REQUEST_BYTES", key: "max_request_bytes",
		help: "most bytes of a request body, and of what a compressed one decompresses to; larger ones are refused (413, resource_exhausted)",
		get:  func(c *Config) string { return strconv.FormatInt(c.MaxRequestBytes, 10) },
		set: func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			c.MaxRequestBytes = n
			return nil
		}},
	{flag: "pxe-interface", env: "ATTESTATION_PXE_INTERFACE", key: "pxe_interface",
		help: "network interface to serve DHCP for network boot on, ports 67 and 4011 (default: no DHCP server)",
		get:  func(c *Config) string { return c.PXEInterface }, set: func(c *Config, v string) error { c.PXEInterface = v; return nil }},
	{flag: "dhcp-mode", env: "ATTESTATION_DHCP_MODE", key: "dhcp_mode",
		help: "DHCP mode: proxy (answer PXE clients only, beside the site's DHCP server, no addresses) or full",
		get:  func(c *Config) string { return c.DHCPMode }, set: func(c *Config, v string) error { c.DHCPMode = v; return nil }},
	{flag: "dhcp-range", env: "ATTESTATION_DHCP_RANGE", key: "dhcp_range",
		help: "full mode's address pool, FIRST-LAST on the PXE interface's subnet, e.g. 10.0.0.100-10.0.0.199",
		get:  func(c *Config) string { return c.DHCPRange }, set: func(c *Config, v string) error { c.DHCPRange = v; return nil }},
	{flag: "dhcp-router", env: "ATTESTATION_DHCP_ROUTER", key: "dhcp_router",
		help: "router (option 3) full mode tells its clients",
		get:  func(c *Config) string { return c.DHCPRouter }, set: func(c *Config, v string) error { c.DHCPRouter = v; return nil }},
	{flag: "dhcp-dns", env: "ATTESTATION_DHCP_DNS", key: "dhcp_dns",
		help: "comma-separated DNS servers (option 6) full mode tells its clients",
		get:  func(c *Config) string { return strings.Join(c.DHCPDNS, ",") },
		set: func(c *Config, v string) error {
			c.DHCPDNS = nil
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					c.DHCPDNS = append(c.DHCPDNS, s)
				}
			}
			return nil
		}},
	intSetting("dhcp-max-unknown", "ATTESTATION_DHCP_MAX_UNKNOWN", "dhcp_max_unknown",
		"full mode: most leases held by clients without a reservation, so a flood of random MACs leaves addresses for the rest (0: no cap)",
		func(c *Config) *int { return &c.DHCPMaxUnknown }),
	boolSetting("pxe-router-advertisements", "ATTESTATION_PXE_ROUTER_ADVERTISEMENTS", "pxe_router_advertisements",
		"answer the IPv6 router solicitations of the iPXE clients DHCP just answered, unicast, with an advertisement that configures nothing, so that iPXE boots at once instead of waiting out IPv6 autoconfiguration on a link without IPv6 routers; silent while a router advertises on the link (false: off)",
		func(c *Config) *bool { return &c.PXERouterAdvertisements }),
	{flag: "tftp-listen", env: "ATTESTATION_TFTP_LISTEN", key: "tftp_listen",
		help: "UDP address of the TFTP server for network boot, e.g. :69 (default: no TFTP server)",
		get:  func(c *Config) string { return c.TFTPListen }, set: func(c *Config, v string) error { c.TFTPListen = v; return nil }},
	{flag: "boot-assets", env: "ATTESTATION_BOOT_ASSETS", key: "boot_assets",
		help: "directory of the files served for network boot (default: DATA_DIR/boot)",
		get:  func(c *Config) string { return c.BootAssets }, set: func(c *Config, v string) error { c.BootAssets = v; return nil }},
	{flag: "ipxe-dir", env: "ATTESTATION_IPXE_DIR", key: "ipxe_dir",
		help: "directory of the iPXE binaries served over TFTP (undionly.kpxe, snponly.efi, ipxe.efi; Debian package ipxe)",
		get:  func(c *Config) string { return c.IPXEDir }, set: func(c *Config, v string) error { c.IPXEDir = v; return nil }},
	{flag: "boot-kernel-args", env: "ATTESTATION_BOOT_KERNEL_ARGS", key: "boot_kernel_args",
		help: "arguments added to the network-booted agent's kernel command line, e.g. \"console=ttyS0\"",
		get:  func(c *Config) string { return c.BootKernelArgs }, set: func(c *Config, v string) error { c.BootKernelArgs = v; return nil }},
	{flag: "oidc-issuer", env: "ATTESTATION_OIDC_ISSUER", key: "oidc_issuer",
		help: "OIDC issuer whose access tokens operators may use, e.g. https://keycloak.example/realms/infra (default: none, the admin token only)",
		get:  func(c *Config) string { return c.OIDCIssuer }, set: func(c *Config, v string) error { c.OIDCIssuer = v; return nil }},
	{flag: "oidc-audience", env: "ATTESTATION_OIDC_AUDIENCE", key: "oidc_audience",
		help: "audience an OIDC access token must carry in aud (or as its azp)",
		get:  func(c *Config) string { return c.OIDCAudience }, set: func(c *Config, v string) error { c.OIDCAudience = v; return nil }},
	{flag: "oidc-role-claims", env: "ATTESTATION_OIDC_ROLE_CLAIMS", key: "oidc_role_claims",
		help: "comma-separated dotted paths of the token claims roles are read from (default: realm_access.roles, resource_access.<audience>.roles, groups)",
		get:  func(c *Config) string { return strings.Join(c.OIDCRoleClaims, ",") },
		set:  func(c *Config, v string) error { c.OIDCRoleClaims = list(v); return nil }},
	{flag: "oidc-role-map", env: "ATTESTATION_OIDC_ROLE_MAP", key: "oidc_role_map",
		help: "comma-separated VALUE=ROLE pairs mapping claim values (groups, roles) to viewer, operator or admin, e.g. /ops=operator; a value named like a role needs none",
		get: func(c *Config) string {
			var pairs []string
			for _, k := range slices.Sorted(maps.Keys(c.OIDCRoleMap)) {
				pairs = append(pairs, k+"="+c.OIDCRoleMap[k])
			}
			return strings.Join(pairs, ",")
		},
		set: func(c *Config, v string) error {
			c.OIDCRoleMap = map[string]string{}
			for _, pair := range list(v) {
				value, role, ok := strings.Cut(pair, "=")
				if !ok || value == "" {
					return fmt.Errorf("%q: want VALUE=ROLE", pair)
				}
				c.OIDCRoleMap[value] = role
			}
			return nil
		}},
	boolSetting("metrics-auth", "ATTESTATION_METRICS_AUTH", "metrics_auth", "require a viewer's token for /metrics (default: public, for scrapers)",
		func(c *Config) *bool { return &c.MetricsAuth }),
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
		help := fmt.Sprintf("%s (env %s, file key %s)", s.help, s.env, s.key)
		if s.boolean {
			v, _ := strconv.ParseBool(s.get(&def))
			fs.Bool(s.flag, v, help)
			continue
		}
		fs.String(s.flag, s.get(&def), help)
	}
}

// Help describes the sources and their precedence, for --help and errors.
const Help = `Settings come from flags, then ATTESTATION_* environment variables, then the
YAML file named by --config or ATTESTATION_CONFIG, then built-in defaults; the
first that sets a value wins.`

// Load builds the config from the parsed flags, the environment (getenv)
// and the config file. An error names the flag, the variable, or the
// file, line and key of the bad setting.
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
	cfg.origin.over = map[string]string{}
	for _, s := range settings {
		if v := getenv(s.env); v != "" {
			if err := s.set(&cfg, v); err != nil {
				return Config{}, fmt.Errorf("%s: %w", s.env, err)
			}
			cfg.origin.over[s.key] = s.env
		}
		if f := fs.Lookup(s.flag); f != nil && f.Changed {
			if err := s.set(&cfg, f.Value.String()); err != nil {
				return Config{}, fmt.Errorf("--%s: %w", s.flag, err)
			}
			cfg.origin.over[s.key] = "--" + s.flag
		}
	}
	return cfg, cfg.Validate()
}

// Validate checks every setting and says what is wrong with the first bad
// one, starting with where it was set (see Origin).
func (c *Config) Validate() error {
	err := c.validate()
	if ke, ok := err.(*keyError); ok {
		return fmt.Errorf("%s: %s", c.Origin(ke.key), ke.msg)
	}
	return err
}

func (c *Config) validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "%q: want HOST:PORT or :PORT", c.Listen)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return bad("data_dir", "must not be empty")
	}
	if err := c.validateDatabase(); err != nil {
		return err
	}
	if _, err := c.SlogLevel(); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("log_format", "%q: want text or json", c.LogFormat)
	}
	if c.EventHandlerTimeout <= 0 {
		return bad("event_handler_timeout", "%s: must be positive", time.Duration(c.EventHandlerTimeout))
	}
	if c.TFTPListen != "" {
		if _, _, err := net.SplitHostPort(c.TFTPListen); err != nil {
			return bad("tftp_listen", "%q: want HOST:PORT or :PORT", c.TFTPListen)
		}
	}
	if c.DHCPMode != DHCPModeProxy && c.DHCPMode != DHCPModeFull {
		return bad("dhcp_mode", "%q: want proxy or full", c.DHCPMode)
	}
	if err := c.validateDHCP(); err != nil {
		return err
	}
	switch {
	case c.RegisterRate < 0 || math.IsNaN(c.RegisterRate) || math.IsInf(c.RegisterRate, 0):
		return bad("register_rate", "%g: want 0 (no limit) or a positive number of calls a second", c.RegisterRate)
	case c.RegisterRate > 0 && c.RegisterBurst < 1:
		return bad("register_burst", "%d: want at least 1 with a register_rate", c.RegisterBurst)
	}
	if c.MaxRequestBytes < 4<<10 || c.MaxRequestBytes > 1<<30 {
		return bad("max_request_bytes", "%d: want 4096 to 1073741824", c.MaxRequestBytes)
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return bad("admin_token", "must be at least 16 characters")
	}
	if err := c.validateOIDC(); err != nil {
		return err
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	return c.validateAttestation()
}

// validateDatabase accepts no database (SQLite) or a PostgreSQL URL. The
// value is not quoted back: it may hold a password.
func (c *Config) validateDatabase() error {
	if c.Database == "" {
		return nil
	}
	scheme, _, _ := strings.Cut(c.Database, "://")
	if scheme != "postgres" && scheme != "postgresql" {
		return bad("database", "want a postgres:// or postgresql:// URL (PostgreSQL), or nothing for the SQLite file in data_dir")
	}
	if _, err := url.Parse(c.Database); err != nil {
		return bad("database", "not a valid URL (check the escaping of special characters in the user or password: %%40 for @)")
	}
	return nil
}

// TLS reports whether the API is served over TLS.
func (c *Config) TLS() bool { return c.TLSCert != "" || c.TLSSelfSigned }

// validateTLS checks that the CA and TLS files come in pairs and that
// one TLS certificate is asked for, not two. Whether the files can be
// read is for the daemon to say when it starts.
func (c *Config) validateTLS() error {
	switch {
	case c.CACert != "" && c.CAKey == "":
		return bad("ca_cert", "set ca_key too (the CA's private key)")
	case c.CAKey != "" && c.CACert == "":
		return bad("ca_key", "set ca_cert too (the CA's certificate)")
	case c.TLSCert != "" && c.TLSKey == "":
		return bad("tls_cert", "set tls_key too (the certificate's private key)")
	case c.TLSKey != "" && c.TLSCert == "":
		return bad("tls_key", "set tls_cert too (the key's certificate)")
	case c.TLSSelfSigned && c.TLSCert != "":
		return bad("tls_self_signed", "not with tls_cert: serve your certificate or one the daemon's CA issues, not both")
	}
	return nil
}

var (
	hex64  = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	roleRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
)

func (c *Config) validateOIDC() error {
	if c.OIDCIssuer == "" {
		return nil
	}
	u, err := url.Parse(c.OIDCIssuer)
	loopback := err == nil && (u.Hostname() == "localhost" || net.ParseIP(u.Hostname()).IsLoopback())
	if err != nil || u.Host == "" || u.RawQuery != "" || !(u.Scheme == "https" || (u.Scheme == "http" && loopback)) {
		return bad("oidc_issuer", "%q: want https://HOST[/PATH] (http only on loopback)", c.OIDCIssuer)
	}
	if strings.TrimSpace(c.OIDCAudience) == "" {
		return bad("oidc_audience", "must not be empty with an oidc_issuer")
	}
	for i, p := range c.OIDCRoleClaims {
		if p == "" || slices.Contains(strings.Split(p, "."), "") {
			return bad(fmt.Sprintf("oidc_role_claims[%d]", i), "%q: want a dotted path such as realm_access.roles", p)
		}
	}
	for _, v := range slices.Sorted(maps.Keys(c.OIDCRoleMap)) {
		switch c.OIDCRoleMap[v] {
		case "viewer", "operator", "admin":
		default:
			return bad("oidc_role_map."+v, "%q is not a role: want viewer, operator or admin", c.OIDCRoleMap[v])
		}
	}
	return nil
}

func (c *Config) validateAttestation() error {
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return bad("public_url", "%q: want http://HOST[:PORT] or https://HOST[:PORT]", c.PublicURL)
		}
	}
	switch c.EKPolicy {
	case EKPolicyVerify, EKPolicyAllowlist, EKPolicyAny:
	default:
		return bad("ek_policy", "%q: want verify, allowlist or any", c.EKPolicy)
	}
	for i, fp := range c.EKAllowlist {
		if !hex64.MatchString(fp) {
			return bad(fmt.Sprintf("ek_allowlist[%d]", i), "%q is not an EK fingerprint (64 hex digits)", fp)
		}
	}
	for _, role := range slices.Sorted(maps.Keys(c.PCRPolicy)) {
		if !roleRE.MatchString(role) {
			return bad("pcr_policy."+role, "%q is not a role (lower-case letters, digits, '-' or '_', starting with a letter)", role)
		}
		for _, i := range slices.Sorted(maps.Keys(c.PCRPolicy[role])) {
			key := fmt.Sprintf("pcr_policy.%s.%d", role, i)
			if i < 0 || i > 23 {
				return bad(key, "PCR %d out of range 0..23", i)
			}
			if v := c.PCRPolicy[role][i]; !hex64.MatchString(v) {
				return bad(key, "%q is not a SHA-256 value (64 hex digits; a PCR of role %s)", v, role)
			}
		}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"challenge_ttl", c.ChallengeTTL},
		{"session_ttl", c.SessionTTL},
		{"config_token_ttl", c.ConfigTokenTTL},
		{"heartbeat_interval", c.HeartbeatInterval},
		{"node_cert_lifetime", c.NodeCertLifetime},
	} {
		if d.v <= 0 {
			return bad(d.key, "%s: must be positive", time.Duration(d.v))
		}
	}
	return nil
}

// BootAssetsDir is the boot assets directory: BootAssets, or DATA_DIR/boot.
func (c *Config) BootAssetsDir() string {
	if c.BootAssets != "" {
		return c.BootAssets
	}
	return filepath.Join(c.DataDir, "boot")
}

// DHCPPool parses dhcp_range into its first and last addresses.
func (c *Config) DHCPPool() (first, last net.IP, err error) {
	a, b, ok := strings.Cut(c.DHCPRange, "-")
	first, last = net.ParseIP(strings.TrimSpace(a)).To4(), net.ParseIP(strings.TrimSpace(b)).To4()
	if !ok || first == nil || last == nil {
		return nil, nil, bad("dhcp_range", "%q: want FIRST-LAST IPv4 addresses", c.DHCPRange)
	}
	return first, last, nil
}

func (c *Config) validateDHCP() error {
	if c.DHCPMode == DHCPModeFull && c.PXEInterface != "" && c.DHCPRange == "" {
		return bad("dhcp_range", "required by dhcp_mode full (FIRST-LAST)")
	}
	if c.DHCPRange != "" {
		if _, _, err := c.DHCPPool(); err != nil {
			return err
		}
	}
	if c.DHCPRouter != "" && net.ParseIP(c.DHCPRouter).To4() == nil {
		return bad("dhcp_router", "%q: want an IPv4 address", c.DHCPRouter)
	}
	for i, ip := range c.DHCPDNS {
		if net.ParseIP(ip).To4() == nil {
			return bad(fmt.Sprintf("dhcp_dns[%d]", i), "%q: want an IPv4 address", ip)
		}
	}
	if c.DHCPMaxUnknown < 0 {
		return bad("dhcp_max_unknown", "%d: must not be negative", c.DHCPMaxUnknown)
	}
	for _, mac := range slices.Sorted(maps.Keys(c.DHCPReservations)) {
		key := "dhcp_reservations." + mac
		if _, err := net.ParseMAC(mac); err != nil {
			return bad(key, "%q is not a MAC address", mac)
		}
		if ip := c.DHCPReservations[mac]; net.ParseIP(ip).To4() == nil {
			return bad(key, "%q is not an IPv4 address", ip)
		}
	}
	return nil
}

// SlogLevel returns the log level.
func (c *Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, bad("log_level", "%q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}
