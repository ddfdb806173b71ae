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

	r := raw("configs", "list")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ROLE") || strings.Count(r.stdout, "\n") != 1 || r.stderr != "no config templates\n" {
		t.Errorf("configs list with none: got exit %d, stdout %q, stderr %q; want the header and \"no config templates\" on stderr", r.code, r.stdout, r.stderr)
	}
	r = raw("configs", "get", "worker")
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

	// Delete: the role's template goes, the others stay; a second delete
	// says there is none.
	if out := ok("configs", "delete", "worker"); !strings.Contains(out, "Deleted the config template of role worker") {
		t.Errorf("configs delete: got %q, want a confirmation naming the role", out)
	}
	r = raw("configs", "get", "worker")
	if r.code != 1 || !strings.Contains(r.stderr, "no config template") {
		t.Errorf("configs get after delete: exit %d, stderr %q; want 1 and 'no config template'", r.code, r.stderr)
	}
	if out := ok("configs", "list"); strings.Contains(out, "worker") || !strings.Contains(out, "storage") {
		t.Errorf("configs list after delete: got\n%s\nwant storage alone", out)
	}
	r = raw("configs", "delete", "worker")
	if r.code != 1 || !strings.Contains(r.stderr, "role worker: no config template") {
		t.Errorf("configs delete of a role without one: exit %d, stderr %q; want 1 and 'no config template'", r.code, r.stderr)
	}
	r = raw("configs", "delete", "Worker")
	if r.code != 1 || !strings.Contains(r.stderr, `ROLE: "Worker" is not a role`) && !strings.Contains(r.stderr, `role: "Worker" is not a role`) {
		t.Errorf("configs delete of a bad role: exit %d, stderr %q; want it to say Worker is not a role", r.code, r.stderr)
	}
}
