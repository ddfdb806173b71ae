// Package testenv decides what an integration test does when the machine
// lacks something it needs (a tool, a kernel, firmware, root, a network
// namespace): locally it skips, naming what is missing; under CI (CI=true,
// or REQUIRE_INTEGRATION=1 as .ci/run sets) it fails instead, so a green
// CI cannot hide a test that did not run. It also records each
// integration test that ran, for the table CI prints at its end.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// LogEnv names the file to which Integration appends a line per test.
const LogEnv = "ATTESTATION_INTEGRATION_LOG"

// NotesEnv names the file to which Note appends a line per note.
const NotesEnv = "ATTESTATION_INTEGRATION_NOTES"

// Required reports whether a missing prerequisite fails the test rather
// than skipping it.
func Required() bool {
	return os.Getenv("REQUIRE_INTEGRATION") == "1" || os.Getenv("CI") == "true"
}

// Missing ends the test because the machine lacks what the message names:
// a visible skip locally, a failure under CI.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("integration test cannot run: %s (required under CI; make test-deps installs it)", msg)
	}
	t.Skipf("SKIP: %s", msg)
}

// LookPath returns the path of the command name, or ends the test through
// Missing naming the Debian package that ships it.
func LookPath(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "no %s (Debian package %s)", name, pkg)
	}
	return p
}

// File ends the test through Missing unless path exists, naming the
// Debian package that ships it.
func File(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "no %s (Debian package %s)", path, pkg)
	}
}

// Root ends the test through Missing unless it runs as root; why says
// what needs it.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "not root: %s needs root (make test runs as root)", why)
	}
}

// pkg names the package under test by its directory below the module
// root (go test runs each test binary in its package's directory), the
// root package by the root directory's name. A module nested in the
// repository's (its path below the outer one's) counts from the outer
// root: packaging/deb, not deb.
func pkg() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	root, mod := "", ""
	for dir := wd; ; dir = filepath.Dir(dir) {
		if p := modulePath(filepath.Join(dir, "go.mod")); p != "" && (root == "" || strings.HasPrefix(mod, p+"/")) {
			root, mod = dir, p
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	if root == "" {
		return wd
	}
	rel, err := filepath.Rel(root, wd)
	if err != nil {
		return wd
	}
	if rel == "." {
		return path.Base(mod)
	}
	return filepath.ToSlash(rel)
}

// modulePath is the module path in the go.mod file, "" when there is none.
func modulePath(gomod string) string {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(mod), `"`)
		}
	}
	return ""
}

// Integration marks t as an integration test proving what, for example
// "BIOS VM network boot". When the test ends, a line with its package and
// name, what, its result and its duration is appended to the file named by
// ATTESTATION_INTEGRATION_LOG, if set.
func Integration(t testing.TB, what string) {
	t.Helper()
	file := os.Getenv(LogEnv)
	if file == "" {
		return
	}
	start := time.Now()
	t.Cleanup(func() {
		result := "pass"
		switch {
		case t.Failed():
			result = "FAIL"
		case t.Skipped():
			result = "skip"
		}
		line := strings.Join([]string{pkg() + "." + t.Name(), what, result, time.Since(start).Round(100 * time.Millisecond).String()}, "\t") + "\n"
		// O_APPEND: the packages' test binaries run at once, and each
		// line goes out in one write.
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Errorf("record the integration test: %v", err)
			return
		}
		defer f.Close()
		if _, err := f.WriteString(line); err != nil {
			t.Errorf("record the integration test: %v", err)
		}
	})
}

// Note records a measurement of t, for example how long each phase of a
// boot took: in the test's log, and as a line with the test's package and
// name in the file named by ATTESTATION_INTEGRATION_NOTES, if set, which
// CI prints after its table (go test shows a passing test's log only
// under -v).
func Note(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " ")
	t.Log(msg)
	file := os.Getenv(NotesEnv)
	if file == "" {
		return
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Errorf("record a note: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(pkg() + "." + t.Name() + "\t" + msg + "\n"); err != nil {
		t.Errorf("record a note: %v", err)
	}
}
