package daemon_test

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/extensions"
	_ "github.com/attestation/attestation/extensions/all" // what attestationd is built with
	"github.com/attestation/attestation/internal/version"
)

// attestationd --version prints its build and the compiled-in extensions,
// and starts nothing: not even the config is loaded (a bad flag value
// beside it does not matter).
func TestVersion(t *testing.T) {
	cmd := daemon.Command()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"--version", "--listen", "not an address"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("attestationd --version: %v (stderr %q)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("attestationd --version printed %q, want three lines", out.String())
	}
	if want := "attestationd " + version.String(); !strings.HasPrefix(lines[0], want) {
		t.Errorf("first line %q, want it to start with %q", lines[0], want)
	}
	if want := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH; lines[1] != want {
		t.Errorf("second line %q, want %q", lines[1], want)
	}
	var exts []string
	for _, e := range extensions.All() {
		exts = append(exts, e.Info().Name+" v"+e.Info().Version)
	}
	if want := "extensions: " + strings.Join(exts, ", "); lines[2] != want || !strings.Contains(want, "tags v") || !strings.Contains(want, "webhook v") {
		t.Errorf("third line %q, want %q, tags and webhook among them", lines[2], want)
	}
}
