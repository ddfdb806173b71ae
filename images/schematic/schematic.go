// Package schematic parses and names schematics: small YAML or JSON
// documents saying what a machine boots (kernel arguments, the agent's
// settings, extra kernel modules and files, labels, network or disk
// boot). A schematic's ID is the hex SHA-256 of its canonical JSON, so the
// same content has the same ID whatever its key order, formatting or
// YAML/JSON choice.
package schematic

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// MaxSize bounds a schematic document.
const MaxSize = 64 << 10

// Boot modes.
const (
	BootDisk    = "disk"    // a provisioned machine boots its local disk (the default)
	BootNetwork = "network" // it network-boots the schematic's kernel and initramfs
)

// Schematic is a parsed, checked schematic.
type Schematic struct {
	// KernelArgs are added to the kernel command line, in order.
	KernelArgs []string `json:"kernel_args,omitempty"`
	// Agent holds the agent's settings.
	Agent Agent `json:"agent,omitzero"`
	// Modules are kernel modules the initramfs carries besides the
	// default NIC drivers, in load order.
	Modules []string `json:"modules,omitempty"`
	// Files are extra files of the initramfs, by path.
	Files []File `json:"files,omitempty"`
	// Labels are free-form.
	Labels map[string]string `json:"labels,omitempty"`
	// Boot is disk or network.
	Boot string `json:"boot,omitempty"`
}

// Agent are the agent's settings in a schematic.
type Agent struct {
	// URL is the control plane's URL as the machine reaches it.
	URL string `json:"url,omitempty"`
	// CA is a PEM bundle the agent trusts for URL (https).
	CA string `json:"ca,omitempty"`
	// TPM is required (refuse to enroll without one) or optional.
	TPM string `json:"tpm,omitempty"`
}

// File is an extra file of the initramfs.
type File struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	// Mode is octal, like "0644" (the default).
	Mode string `json:"mode,omitempty"`
}

// Error is a schematic that does not parse or check: Field names what is
// wrong ("" for the document as a whole).
type Error struct {
	Field string
	Err   error
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "schematic: " + e.Err.Error()
	}
	return fmt.Sprintf("schematic: field %s: %v", e.Field, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &Error{Field: field, Err: fmt.Errorf(format, args...)}
}

// Parse reads a schematic from YAML or JSON, strictly: an unknown field,
// a value of the wrong type, a document over MaxSize or one that does not
// check is an *Error naming the field.
func Parse(doc []byte) (*Schematic, error) {
	if len(doc) > MaxSize {
		return nil, &Error{Err: fmt.Errorf("the document is %d bytes, at most %d", len(doc), MaxSize)}
	}
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, &Error{Err: fmt.Errorf("not YAML or JSON: %v", err)}
	}
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		j = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var s Schematic
	if err := dec.Decode(&s); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "":
			return nil, &Error{Err: fmt.Errorf("want an object, got a %s", te.Value)}
		case errors.As(err, &te):
			return nil, fieldErr(te.Field, "want %s, got a %s", te.Type, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return nil, fieldErr(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), "unknown field")
		default:
			return nil, &Error{Err: fmt.Errorf("want an object: %v", err)}
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &Error{Err: errors.New("more than one document")}
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	s.normalize()
	return &s, nil
}

var (
	moduleRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	labelRE  = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,62}[a-zA-Z0-9])?$`)
)

func (s *Schematic) check() error {
	if len(s.KernelArgs) > 64 {
		return fieldErr("kernel_args", "%d arguments, at most 64", len(s.KernelArgs))
	}
	for i, a := range s.KernelArgs {
		if a == "" || strings.ContainsAny(a, " \t\r\n\x00") {
			return fieldErr(fmt.Sprintf("kernel_args[%d]", i), "%q: one argument, without blanks", a)
		}
	}
	if s.Agent.URL != "" {
		u, err := url.Parse(s.Agent.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fieldErr("agent.url", "%q: want http://HOST[:PORT] or https://HOST[:PORT]", s.Agent.URL)
		}
	}
	if s.Agent.CA != "" && !strings.Contains(s.Agent.CA, "-----BEGIN CERTIFICATE-----") {
		return fieldErr("agent.ca", "want PEM certificates")
	}
	switch s.Agent.TPM {
	case "", "required", "optional":
	default:
		return fieldErr("agent.tpm", "%q: want required or optional", s.Agent.TPM)
	}
	for i, m := range s.Modules {
		if !moduleRE.MatchString(m) {
			return fieldErr(fmt.Sprintf("modules[%d]", i), "%q is not a kernel module name", m)
		}
	}
	seen := map[string]bool{}
	for i, f := range s.Files {
		field := fmt.Sprintf("files[%d]", i)
		clean := path.Clean(f.Path)
		if f.Path == "" || path.IsAbs(f.Path) || clean != f.Path || clean == ".." || strings.HasPrefix(clean, "../") {
			return fieldErr(field+".path", "%q: want a clean relative path inside the initramfs, without ..", f.Path)
		}
		if clean == "init" || clean == "etc/attestation/modules" {
			return fieldErr(field+".path", "%q: the image builder writes that file", f.Path)
		}
		if seen[clean] {
			return fieldErr(field+".path", "%q appears twice", f.Path)
		}
		seen[clean] = true
		if f.Mode != "" {
			if m, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || m > 0o777 {
				return fieldErr(field+".mode", "%q: want octal permissions like 0644", f.Mode)
			}
		}
	}
	for k, v := range s.Labels {
		if !labelRE.MatchString(k) {
			return fieldErr("labels", "key %q: letters, digits, '.', '_', '/', '-', at most 64", k)
		}
		if len(v) > 256 {
			return fieldErr("labels."+k, "%d bytes, at most 256", len(v))
		}
	}
	switch s.Boot {
	case "", BootDisk, BootNetwork:
	default:
		return fieldErr("boot", "%q: want disk or network", s.Boot)
	}
	return nil
}

// normalize gives equal schematics one form: defaults spelled out the same
// way, files by path, modes in four digits, empty collections absent.
func (s *Schematic) normalize() {
	if s.Boot == BootDisk {
		s.Boot = ""
	}
	for i := range s.Files {
		if m, err := strconv.ParseUint(s.Files[i].Mode, 8, 32); err == nil && m != 0o644 {
			s.Files[i].Mode = fmt.Sprintf("%04o", m)
		} else {
			s.Files[i].Mode = ""
		}
	}
	slices.SortFunc(s.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	if len(s.KernelArgs) == 0 {
		s.KernelArgs = nil
	}
	if len(s.Modules) == 0 {
		s.Modules = nil
	}
	if len(s.Files) == 0 {
		s.Files = nil
	}
	if len(s.Labels) == 0 {
		s.Labels = nil
	}
}

// Canonical is the schematic's canonical JSON: what its ID hashes.
func (s *Schematic) Canonical() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // strings, slices and maps of strings always marshal
	}
	return b
}

// ID is the hex SHA-256 of the canonical JSON.
func (s *Schematic) ID() string {
	sum := sha256.Sum256(s.Canonical())
	return hex.EncodeToString(sum[:])
}

// ValidID reports whether id looks like a schematic ID.
func ValidID(id string) bool {
	if len(id) != 64 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}
