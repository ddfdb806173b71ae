// Package extensions is the registry of extensions compiled into the
// binaries. An extension registers itself from an init function, like a
// database/sql driver; which extensions a binary contains is decided by the
// one list of blank imports in package extensions/all.
package extensions

import (
	"fmt"
	"regexp"
	"sort"
	"sync"

	"github.com/attestation/attestation/internal/version"
)

// Info describes an extension.
type Info struct {
	// Name is unique and snake_case; it prefixes the extension's routes
	// (/api/v1/<name>/) and tables (extension_<name>_*).
	Name string
	// Version is the extension's semantic version, without a leading v.
	Version string
	// Description is one line.
	Description string
}

// Extension is the one thing every extension implements; its capabilities
// are optional interfaces the host type-asserts.
type Extension interface {
	Info() Info
}

var (
	mu       sync.RWMutex
	registry = map[string]Extension{}

	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	versionRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
)

// Register adds an extension. It panics on a programmer error: a nil
// extension, a name that is not snake_case, a version that is not semver,
// an empty description, or a name registered twice.
func Register(e Extension) {
	if e == nil {
		panic("extensions: Register of a nil extension")
	}
	info := e.Info()
	if !nameRE.MatchString(info.Name) {
		panic(fmt.Sprintf("extensions: Register: name %q is not snake_case (like \"tags\" or \"ip_pool\")", info.Name))
	}
	if !versionRE.MatchString(info.Version) {
		panic(fmt.Sprintf("extensions: Register %s: version %q is not semantic (like \"1.2.3\")", info.Name, info.Version))
	}
	if info.Description == "" {
		panic(fmt.Sprintf("extensions: Register %s: a one-line description is required", info.Name))
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[info.Name]; dup {
		panic(fmt.Sprintf("extensions: Register called twice for extension %q", info.Name))
	}
	registry[info.Name] = e
}

// Versions lists the registered extensions' names and versions, sorted,
// for --version.
func Versions() []version.Extension {
	exts := []version.Extension{}
	for _, e := range All() {
		exts = append(exts, version.Extension{Name: e.Info().Name, Version: e.Info().Version})
	}
	return exts
}

// All returns the registered extensions sorted by name.
func All() []Extension {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]Extension, 0, len(registry))
	for _, e := range registry {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Info().Name < out[j].Info().Name })
	return out
}
