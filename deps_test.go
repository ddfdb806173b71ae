package attestation_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/attestation/attestation"

// deps returns the module's own packages that pkg imports, directly or not.
func deps(t *testing.T, pattern string) map[string][]string {
	return list(t, pattern, "Deps")
}

// imports returns the module's own packages that pkg imports directly.
func imports(t *testing.T, pattern string) map[string][]string {
	return list(t, pattern, "Imports")
}

func list(t *testing.T, pattern, field string) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .`+field+`}} {{.}}{{end}}`, pattern).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pattern, err, out)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		for _, d := range f[1:] {
			if strings.HasPrefix(d, module+"/") {
				m[f[0]] = append(m[f[0]], d)
			}
		}
	}
	return m
}

// isConcreteExtension reports whether p is an extension that ships (not
// the SDK, not the list of blank imports).
func isConcreteExtension(p string) bool {
	rest, ok := strings.CutPrefix(p, module+"/extensions/")
	return ok && rest != "all" && !strings.HasPrefix(rest, "all/")
}

func TestDependencyDirection(t *testing.T) {
	// The agent is a separate static binary: it must not pull in the
	// control plane, the CLI or extensions.
	for pkg, ds := range deps(t, "./agent/...") {
		for _, d := range ds {
			for _, banned := range []string{"/controlplane", "/cli", "/extensions"} {
				if strings.HasPrefix(d, module+banned) {
					t.Errorf("%s imports %s: the agent must not depend on %s", pkg, d, banned[1:])
				}
			}
		}
	}
	// The control plane and the CLI know concrete extensions only through
	// the one list of blank imports, which only their mains import.
	for _, pattern := range []string{"./controlplane/...", "./cli/..."} {
		for pkg, ds := range deps(t, pattern) {
			isMain := strings.Contains(pkg, "/cmd/")
			for _, d := range ds {
				if isMain {
					continue
				}
				if d == module+"/extensions/all" || isConcreteExtension(d) {
					t.Errorf("%s imports %s: only the mains may import the extension list", pkg, d)
				}
			}
		}
	}
	// The control plane never imports the CLI, and the CLI never imports the
	// daemon's internals: it talks to it over the API (its tests may).
	for pkg, ds := range deps(t, "./controlplane/...") {
		for _, d := range ds {
			if strings.HasPrefix(d, module+"/cli") {
				t.Errorf("%s imports %s: the control plane must not depend on the CLI", pkg, d)
			}
		}
	}
	// (Extensions' CLI commands live beside their daemon side, so the CLI
	// binary links the SDK; the CLI's own code imports no control plane.)
	for pkg, ds := range imports(t, "./cli/...") {
		for _, d := range ds {
			if strings.HasPrefix(d, module+"/controlplane") {
				t.Errorf("%s imports %s: the CLI must reach the daemon through the API only", pkg, d)
			}
		}
	}
}
