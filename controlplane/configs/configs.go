// Package configs keeps the per-role config templates and renders each
// approved machine's one-time config from its role's template.
//
// A template is Go text/template over Machine (.ID, .Hostname, .Role,
// .EKFingerprint, .MACs, .IP, .SchematicID, .SMBIOSUUID, .Serial,
// .Product), with the extra function join (strings.Join). It is checked
// when set: it must parse and render for a sample machine, so that a typo
// is an error at set time, not at boot. A role without a template gets
// the default config: the machine's fields as YAML.
package configs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/template"
	"unicode/utf8"

	"go.yaml.in/yaml/v2"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/store"
)

// MaxSize bounds a template and a rendered config.
const MaxSize = 1 << 20

// Machine is what a template sees of the machine.
//
// The json and yaml tags must name every field alike: the default config
// is written with the yaml tags and was first defined by the json ones
// (TestDefaultMatchesJSONTags).
type Machine struct {
	// In the order of their keys: the default config lists them so.
	EKFingerprint string   `json:"ek_fingerprint" yaml:"ek_fingerprint"`
	Hostname      string   `json:"hostname" yaml:"hostname"`
	ID            string   `json:"id" yaml:"id"`
	IP            string   `json:"ip,omitempty" yaml:"ip,omitempty"`
	MACs          []string `json:"macs" yaml:"macs"`
	Product       string   `json:"product,omitempty" yaml:"product,omitempty"`
	Role          string   `json:"role" yaml:"role"`
	SchematicID   string   `json:"schematic_id,omitempty" yaml:"schematic_id,omitempty"`
	Serial        string   `json:"serial,omitempty" yaml:"serial,omitempty"`
	SMBIOSUUID    string   `json:"smbios_uuid,omitempty" yaml:"smbios_uuid,omitempty"`
}

// FromStore returns the template's view of a stored machine.
func FromStore(m *store.Machine) Machine {
	macs := m.MACs
	if macs == nil {
		macs = []string{}
	}
	return Machine{
		ID: m.ID, Hostname: m.Hostname, Role: m.Role, EKFingerprint: m.EKFingerprint,
		MACs: macs, IP: m.IP, SchematicID: m.SchematicID,
		SMBIOSUUID: m.SMBIOSUUID, Serial: m.Serial, Product: m.Product,
	}
}

// Sample is the machine a template is tried on when it is set.
func Sample(role string) Machine {
	return Machine{
		ID:            "0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a",
		Hostname:      "node-1.example.com",
		Role:          role,
		EKFingerprint: strings.Repeat("9f86d081", 8),
		MACs:          []string{"52:54:00:12:34:56", "52:54:00:12:34:57"},
		IP:            "192.0.2.10",
		SchematicID:   strings.Repeat("ab", 32),
		SMBIOSUUID:    "4c4c4544-0042-3510-8052-b4c04f4e4b32",
		Serial:        "SN-0001",
		Product:       "Sample Server",
	}
}

// InvalidError: a template that does not parse or does not render.
type InvalidError struct {
	Role string
	Err  error
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("config template of role %s: %v", e.Role, e.Err)
}

func (e *InvalidError) Unwrap() error { return e.Err }

var funcs = template.FuncMap{"join": strings.Join}

// Parse parses a template.
func Parse(role, text string) (*template.Template, error) {
	if len(text) > MaxSize {
		return nil, &InvalidError{Role: role, Err: fmt.Errorf("template of %d bytes: at most %d", len(text), MaxSize)}
	}
	t, err := template.New(role).Funcs(funcs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, &InvalidError{Role: role, Err: err}
	}
	return t, nil
}

// Check parses a template and renders it for the sample machine.
func Check(role, text string) error {
	if strings.TrimSpace(text) == "" {
		return &InvalidError{Role: role, Err: errors.New("the template is required and must not be blank: it is the whole of each machine's config")}
	}
	t, err := Parse(role, text)
	if err != nil {
		return err
	}
	if _, err := execute(t, Sample(role)); err != nil {
		return &InvalidError{Role: role, Err: fmt.Errorf("does not render for a sample machine: %w", err)}
	}
	return nil
}

// Render renders a template for a machine.
func Render(role, text string, m Machine) ([]byte, error) {
	t, err := parsed.get(role, text)
	if err != nil {
		return nil, err
	}
	return execute(t, m)
}

// parsed keeps the templates Render parsed, by role and text, so that a
// role's template is parsed once rather than at every config fetch.
var parsed = templateCache{m: map[templateKey]*template.Template{}}

// templateCacheSize bounds the cache; beyond it, it starts over.
const templateCacheSize = 256

type templateKey struct{ role, text string }

type templateCache struct {
	mu sync.Mutex
	m  map[templateKey]*template.Template
}

func (c *templateCache) get(role, text string) (*template.Template, error) {
	k := templateKey{role, text}
	c.mu.Lock()
	t := c.m[k]
	c.mu.Unlock()
	if t != nil {
		return t, nil
	}
	t, err := Parse(role, text)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= templateCacheSize {
		clear(c.m)
	}
	c.m[k] = t
	c.mu.Unlock()
	return t, nil
}

// Default is the config of a machine whose role has no template: its
// fields as YAML. It is encoded straight from the struct, not through
// JSON as sigs.k8s.io/yaml would: the same bytes at a third of the CPU,
// which matters because it runs in the transaction that spends the
// config token. Each invalid UTF-8 byte becomes U+FFFD, as JSON would
// have it. The common values (IDs, fingerprints, hostnames, MACs,
// addresses) are written without the encoder, as it would write them
// (plainDefault).
func Default(m Machine) ([]byte, error) {
	if b, ok := plainDefault(m); ok {
		return b, nil
	}
	for _, f := range []*string{&m.EKFingerprint, &m.Hostname, &m.ID, &m.IP, &m.Product, &m.Role, &m.SchematicID, &m.Serial, &m.SMBIOSUUID} {
		*f = validUTF8(*f)
	}
	if m.MACs != nil {
		m.MACs = slices.Clone(m.MACs)
		for i := range m.MACs {
			m.MACs[i] = validUTF8(m.MACs[i])
		}
	}
	return yaml.Marshal(m)
}

// validUTF8 replaces each byte of s that is not UTF-8 with U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // an invalid byte ranges as one utf8.RuneError
		b.WriteRune(r)
	}
	return b.String()
}

func execute(t *template.Template, m Machine) ([]byte, error) {
	w := &limitWriter{max: MaxSize}
	if err := t.Execute(w, m); err != nil {
		return nil, err
	}
	return w.buf.Bytes(), nil
}

var errTooLarge = fmt.Errorf("the rendered config exceeds %d bytes", MaxSize)

// limitWriter stops a template that writes too much.
type limitWriter struct {
	buf bytes.Buffer
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.max {
		return 0, errTooLarge
	}
	return w.buf.Write(p)
}

// Service keeps the templates in the store.
type Service struct {
	store *store.Store
}

// NewService returns a Service on st.
func NewService(st *store.Store) *Service { return &Service{store: st} }

// Set checks a template and stores it as the role's, replacing the one
// before; an invalid template fails with *InvalidError and changes nothing.
// An operator's Set (and Delete) writes its audit record in the same
// transaction (see package audit).
//
// schematicID, when not empty, is the role's default schematic: machines
// approved with the role and no schematic of their own get it. It must
// name a stored schematic.
func (s *Service) Set(ctx context.Context, role, text, schematicID string) (*store.ConfigTemplate, error) {
	if err := Check(role, text); err != nil {
		return nil, err
	}
	c := &store.ConfigTemplate{Role: role, Template: text, SchematicID: strings.ToLower(schematicID)}
	if _, err := s.store.Update(ctx, func(tx *store.Tx) error {
		if c.SchematicID != "" {
			_, err := tx.Schematic(ctx, c.SchematicID)
			if errors.Is(err, store.ErrNotFound) {
				return &InvalidError{Role: role, Err: fmt.Errorf("default schematic %s does not exist: create it first (attestation schematics create -f FILE)", c.SchematicID)}
			}
			if err != nil {
				return err
			}
		}
		if err := tx.PutConfigTemplate(ctx, c); err != nil {
			return err
		}
		return tx.Audit(ctx, audit.Record{Action: audit.ConfigSet, Detail: SetDetail(role, c.SchematicID)})
	}); err != nil {
		return nil, fmt.Errorf("set config template of role %s: %w", role, err)
	}
	return c, nil
}

// SetDetail is the detail of the audit record of setting a role's template.
func SetDetail(role, schematicID string) string {
	return audit.Detail("role", role, "schematic", strings.ToLower(schematicID))
}

// ErrNoTemplate: the role has no config template.
var ErrNoTemplate = errors.New("no config template for this role; set one with 'attestation configs set ROLE FILE'")

// Get returns the role's template, or an error wrapping ErrNoTemplate.
func (s *Service) Get(ctx context.Context, role string) (*store.ConfigTemplate, error) {
	c, err := s.store.GetConfigTemplate(ctx, role)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("role %s: %w", role, ErrNoTemplate)
	}
	if err != nil {
		return nil, fmt.Errorf("get config template of role %s: %w", role, err)
	}
	return c, nil
}

// Delete removes the role's template and returns it; its machines get the
// default config from then on. A role without one fails with an error
// wrapping ErrNoTemplate.
func (s *Service) Delete(ctx context.Context, role string) (*store.ConfigTemplate, error) {
	var c *store.ConfigTemplate
	_, err := s.store.Update(ctx, func(tx *store.Tx) error {
		var err error
		if c, err = tx.DeleteConfigTemplate(ctx, role); err != nil {
			return err
		}
		return tx.Audit(ctx, audit.Record{Action: audit.ConfigDelete, Detail: audit.Detail("role", role)})
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("role %s: %w", role, ErrNoTemplate)
	}
	if err != nil {
		return nil, fmt.Errorf("delete config template of role %s: %w", role, err)
	}
	return c, nil
}

// List returns every template, ordered by role.
func (s *Service) List(ctx context.Context) ([]*store.ConfigTemplate, error) {
	return s.store.ListConfigTemplates(ctx)
}

// Render renders the config of m in the transaction tx, from its role's
// template, or the default config when the role has none. It has the
// signature of machines.Renderer.
func (s *Service) Render(ctx context.Context, tx *store.Tx, m *store.Machine) ([]byte, error) {
	c, err := tx.ConfigTemplate(ctx, m.Role)
	if errors.Is(err, store.ErrNotFound) {
		return Default(FromStore(m))
	}
	if err != nil {
		return nil, err
	}
	return Render(c.Role, c.Template, FromStore(m))
}
