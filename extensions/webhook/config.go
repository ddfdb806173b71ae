package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/attestation/attestation/controlplane/events"
)

// Defaults of the settings a config file may leave out.
const (
	defaultMaxAttempts    = 8
	defaultInitialBackoff = time.Second
	defaultMaxBackoff     = time.Hour
	defaultTimeout        = 10 * time.Second
	defaultRetention      = 30 * 24 * time.Hour
)

// fileConfig is the extension's section of the daemon's config file.
type fileConfig struct {
	Targets        []fileTarget `json:"targets"`
	MaxAttempts    int          `json:"max_attempts"`
	InitialBackoff string       `json:"initial_backoff"`
	MaxBackoff     string       `json:"max_backoff"`
	Retention      string       `json:"retention"`
}

type fileTarget struct {
	Name      string        `json:"name"`
	URL       string        `json:"url"`
	Secret    string        `json:"secret"`
	SecretEnv string        `json:"secret_env"`
	Events    []events.Type `json:"events"`
	Timeout   string        `json:"timeout"`
	// IncludeConfigURL sends node.provisioned with the machine's one-time
	// config URL, a bearer secret: for a receiver that provisions the
	// machine, never for a chat or a log.
	IncludeConfigURL bool `json:"include_config_url"`
}

// duration parses the value of the duration setting key ("" is zero).
func duration(key, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a duration like \"10s\" or \"1m30s\"", key, v)
	}
	return d, nil
}

// settings are the checked configuration, defaults filled in.
type settings struct {
	targets        []*target
	maxAttempts    int
	initialBackoff time.Duration
	maxBackoff     time.Duration
	retention      time.Duration
}

// target is one receiver of webhooks.
type target struct {
	name    string
	url     string
	secret  []byte
	events  []events.Type // empty: every event
	timeout time.Duration
	// configURL: node.provisioned goes out with config_url.
	configURL bool
}

// wants reports whether the target takes events of type t.
func (t *target) wants(typ events.Type) bool {
	if len(t.events) == 0 {
		return true
	}
	for _, e := range t.events {
		if e == typ {
			return true
		}
	}
	return false
}

// displayURL is the target's URL with any password in it masked.
func (t *target) displayURL() string {
	u, err := url.Parse(t.url)
	if err != nil {
		return t.url
	}
	return u.Redacted()
}

// targetName is what a target may be called: it appears in URL paths and
// in the delivery log.
var targetName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// parseConfig decodes raw strictly (unknown keys are errors), checks it,
// fills in the defaults, and resolves secret_env references with getenv.
// raw may be nil: no targets.
func parseConfig(raw json.RawMessage, getenv func(string) (string, bool)) (*settings, error) {
	var fc fileConfig
	if len(bytes.TrimSpace(raw)) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return nil, fmt.Errorf("decode settings: %w", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, errors.New("decode settings: unexpected data after the settings object")
		}
	}
	s := &settings{maxAttempts: fc.MaxAttempts}
	var err error
	if s.initialBackoff, err = duration("initial_backoff", fc.InitialBackoff); err != nil {
		return nil, err
	}
	if s.maxBackoff, err = duration("max_backoff", fc.MaxBackoff); err != nil {
		return nil, err
	}
	if s.retention, err = duration("retention", fc.Retention); err != nil {
		return nil, err
	}
	if s.maxAttempts == 0 {
		s.maxAttempts = defaultMaxAttempts
	}
	if s.maxAttempts < 1 {
		return nil, fmt.Errorf("max_attempts %d: want 1 or more", fc.MaxAttempts)
	}
	if s.initialBackoff == 0 {
		s.initialBackoff = defaultInitialBackoff
	}
	if s.initialBackoff < 0 {
		return nil, fmt.Errorf("initial_backoff %s: must be positive", s.initialBackoff)
	}
	if s.maxBackoff == 0 {
		s.maxBackoff = max(defaultMaxBackoff, s.initialBackoff)
	}
	if s.maxBackoff < s.initialBackoff {
		return nil, fmt.Errorf("max_backoff %s: must not be below initial_backoff %s", s.maxBackoff, s.initialBackoff)
	}
	if s.retention == 0 {
		s.retention = defaultRetention
	}
	if s.retention < 0 {
		return nil, fmt.Errorf("retention %s: must be positive", s.retention)
	}

	seen := map[string]int{}
	for i, ft := range fc.Targets {
		t, err := checkTarget(ft, getenv)
		if err != nil {
			if ft.Name != "" {
				return nil, fmt.Errorf("targets[%d] (%s): %w", i, ft.Name, err)
			}
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		if j, dup := seen[t.name]; dup {
			return nil, fmt.Errorf("targets[%d]: name %q is already used by targets[%d]: target names must be unique", i, t.name, j)
		}
		seen[t.name] = i
		s.targets = append(s.targets, t)
	}
	return s, nil
}

func checkTarget(ft fileTarget, getenv func(string) (string, bool)) (*target, error) {
	if ft.Name == "" {
		return nil, errors.New("name: required")
	}
	if !targetName.MatchString(ft.Name) {
		return nil, fmt.Errorf("name %q: use letters, digits, '.', '_' and '-' (at most 63)", ft.Name)
	}
	if ft.URL == "" {
		return nil, errors.New("url: required")
	}
	u, err := url.Parse(ft.URL)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", ft.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url %q: want an http:// or https:// URL with a host", ft.URL)
	}
	timeout, err := duration("timeout", ft.Timeout)
	if err != nil {
		return nil, err
	}
	t := &target{name: ft.Name, url: ft.URL, timeout: timeout, configURL: ft.IncludeConfigURL}
	switch {
	case ft.Secret != "" && ft.SecretEnv != "":
		return nil, errors.New("secret and secret_env: set one, not both")
	case ft.Secret != "":
		t.secret = []byte(ft.Secret)
	case ft.SecretEnv != "":
		v, ok := getenv(ft.SecretEnv)
		if !ok || v == "" {
			return nil, fmt.Errorf("secret_env %s: the variable is not set or empty", ft.SecretEnv)
		}
		t.secret = []byte(v)
	default:
		return nil, errors.New("secret (or secret_env): required, every delivery is signed with it")
	}
	for i, e := range ft.Events {
		if !e.Valid() {
			return nil, fmt.Errorf("events[%d] %q: unknown event type (want one of %s)", i, e, typeList())
		}
	}
	t.events = append([]events.Type(nil), ft.Events...)
	if t.timeout == 0 {
		t.timeout = defaultTimeout
	}
	if t.timeout < 0 {
		return nil, fmt.Errorf("timeout %s: must be positive", t.timeout)
	}
	return t, nil
}

func typeList() string {
	var names []string
	for _, t := range events.Types() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}
