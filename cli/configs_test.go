package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

func TestConfigs(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, raw := cliFor(t, d)

	if out := ok("configs", "list"); out != "" {
		t.Errorf("configs list with none: got %q, want nothing", out)
	}
	r := raw("configs", "get", "worker")
	if r.code != 1 || !strings.Contains(r.stderr, "no config template") {
		t.Errorf("configs get of an unset role: exit %d, stderr %q; want 1 and 'no config template'", r.code, r.stderr)
	}

	file := filepath.Join(t.TempDir(), "worker.tmpl")
	tmpl := "hostname: {{.Hostname}}\nmacs: {{join .MACs \",\"}}\n"
	if err := os.WriteFile(file, []byte(tmpl), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := ok("configs", "set", "worker", file); !strings.Contains(out, "role worker") {
		t.Errorf("configs set: got %q, want a confirmation naming the role", out)
	}
	if out := ok("configs", "get", "worker"); out != tmpl {
		t.Errorf("configs get: got %q, want the template %q", out, tmpl)
	}

	// From standard input, and as JSON.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr strings.Builder
	env := environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}
	code := cli.Run(ctx, []string{"configs", "set", "storage", "-", "-o", "json"}, strings.NewReader("role: {{.Role}}\n"), &stdout, &stderr, env.get)
	if code != 0 {
		t.Fatalf("configs set from stdin: exit %d, stderr %q", code, stderr.String())
	}
	got := decode[struct {
		Role     string `json:"role"`
		Template string `json:"template"`
	}](t, "configs set -o json", stdout.String())
	if got.Role != "storage" || got.Template != "role: {{.Role}}\n" {
		t.Errorf("configs set -o json: got %+v, want role storage and the template", got)
	}

	out := ok("configs", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ROLE") || !strings.HasPrefix(lines[1], "storage") || !strings.HasPrefix(lines[2], "worker") {
		t.Errorf("configs list: got\n%s\nwant a header, storage and worker", out)
	}

	// A bad template is refused at set time, and the old one stays.
	bad := filepath.Join(t.TempDir(), "bad.tmpl")
	os.WriteFile(bad, []byte("{{.Hostnme}}"), 0o600)
	r = raw("configs", "set", "worker", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "Hostnme") {
		t.Errorf("configs set with a bad template: exit %d, stderr %q; want 1 naming Hostnme", r.code, r.stderr)
	}
	if out := ok("configs", "get", "worker"); out != tmpl {
		t.Errorf("after a refused set: got %q, want the previous template", out)
	}
	r = raw("configs", "set", "worker", filepath.Join(t.TempDir(), "absent"))
	if r.code != 1 || !strings.Contains(r.stderr, "read template") {
		t.Errorf("configs set with a missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}
