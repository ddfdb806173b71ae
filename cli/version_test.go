package cli_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/internal/version"
)

// attestation --version prints its build and the compiled-in extensions
// without a daemon: a URL that does not parse does not matter.
func TestVersion(t *testing.T) {
	r := runCLI(t, environ{cli.EnvURL: "not a URL"}, "--version")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("attestation --version: exit %d, stderr %q; want 0 and none", r.code, r.stderr)
	}
	var exts []version.Extension
	for _, e := range extensions.All() {
		exts = append(exts, version.Extension{Name: e.Info().Name, Version: e.Info().Version})
	}
	if exts == nil {
		exts = []version.Extension{}
	}
	if want := version.Get().Format("attestation", exts); r.stdout != want {
		t.Errorf("attestation --version printed\n%s\nwant\n%s", r.stdout, want)
	}
	if !strings.HasPrefix(r.stdout, "attestation "+version.String()) || !strings.Contains(r.stdout, runtime.Version()) || !strings.Contains(r.stdout, "\nextensions: ") {
		t.Errorf("attestation --version printed %q, want the version, %s and the extensions", r.stdout, runtime.Version())
	}
}
