package testenv_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/internal/testenv"
)

// TestHelperMissing is run by TestMissing in a child process: an
// integration test that lacks a command.
func TestHelperMissing(t *testing.T) {
	if os.Getenv("TESTENV_HELPER") != "1" {
		t.Skip("run by TestMissing")
	}
	testenv.Integration(t, "a tool nobody has")
	testenv.LookPath(t, "no-such-tool-attestation", "no-such-package")
	t.Log("ran past LookPath")
}

// TestMissing runs an integration test that lacks a command locally and
// under CI: a skip naming the command and its package locally, a failure
// naming them under CI=true or REQUIRE_INTEGRATION=1, and a line in the
// integration log either way.
func TestMissing(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        []string
		wantFail   bool
		wantOut    string
		wantResult string
	}{
		{"local", nil, false, "SKIP: no no-such-tool-attestation (Debian package no-such-package)", "skip"},
		{"CI=true", []string{"CI=true"}, true, "integration test cannot run: no no-such-tool-attestation (Debian package no-such-package)", "FAIL"},
		{"REQUIRE_INTEGRATION=1", []string{"REQUIRE_INTEGRATION=1"}, true, "integration test cannot run", "FAIL"},
		{"CI=false", []string{"CI=false"}, false, "SKIP: no no-such-tool", "skip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "integration.log")
			cmd := exec.Command(exe, "-test.run", "^TestHelperMissing$", "-test.v")
			cmd.Env = append([]string{"TESTENV_HELPER=1", "PATH=" + os.Getenv("PATH"), testenv.LogEnv + "=" + log}, tt.env...)
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tt.wantFail {
				t.Errorf("failed: %v, want %v\n%s", failed, tt.wantFail, out)
			}
			if !strings.Contains(string(out), tt.wantOut) {
				t.Errorf("output:\n%s\nwant it to contain %q", out, tt.wantOut)
			}
			if strings.Contains(string(out), "ran past LookPath") {
				t.Errorf("the test went on without the command:\n%s", out)
			}
			b, err := os.ReadFile(log)
			if err != nil {
				t.Fatalf("integration log: %v", err)
			}
			f := strings.Split(strings.TrimSpace(string(b)), "\t")
			if len(f) != 4 || f[0] != "internal/testenv.TestHelperMissing" || f[1] != "a tool nobody has" || f[2] != tt.wantResult {
				t.Errorf("integration log %q, want TestHelperMissing, what, %s, duration", b, tt.wantResult)
			}
		})
	}
}

// TestNestedModuleName: in a module nested in the repository's (its path
// below the outer module's), the integration log names the package from
// the outer root; a go.mod above of another module does not count.
func TestNestedModuleName(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	pkgDir := filepath.Join(tmp, "repo", "packaging", "deb")
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for dir, mod := range map[string]string{
		tmp:                                     "example.com/unrelated",
		filepath.Join(tmp, "repo"):              "example.com/repo",
		filepath.Join(tmp, "repo", "packaging"): "example.com/repo/packaging",
	} {
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+mod+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(tmp, "integration.log")
	cmd := exec.Command(exe, "-test.run", "^TestHelperMissing$")
	cmd.Dir = pkgDir
	cmd.Env = []string{"TESTENV_HELPER=1", "PATH=" + os.Getenv("PATH"), testenv.LogEnv + "=" + log}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Split(string(b), "\t")[0], "packaging/deb.TestHelperMissing"; got != want {
		t.Errorf("logged as %q, want %q", got, want)
	}
}

// TestNote: a note goes to the test's log and, as one line with the
// test's package and name, to the notes file, its whitespace collapsed.
func TestNote(t *testing.T) {
	file := filepath.Join(t.TempDir(), "notes")
	t.Setenv(testenv.NotesEnv, file)
	testenv.Note(t, "boot phases:\n  dhcp %s,\tscript %s", "2.5s", "3.0s")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "internal/testenv.TestNote\tboot phases: dhcp 2.5s, script 3.0s\n"; got != want {
		t.Errorf("notes file %q, want %q", got, want)
	}
}
