package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

// TestSchematics creates a schematic from YAML and the same content as
// JSON in another key order (one ID, the second run says it exists),
// shows and lists it, refuses a bad file naming the field, and approves
// nothing with an unknown schematic.
func TestSchematics(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, raw := cliFor(t, d)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	yamlFile := write("worker.yaml", "kernel_args: [console=ttyS0]\nlabels:\n  rack: a1\nboot: network\n")
	jsonFile := write("worker.json", `{"boot": "network", "labels": {"rack": "a1"}, "kernel_args": ["console=ttyS0"]}`)

	out := ok("schematics", "create", "-f", yamlFile)
	id := strings.TrimPrefix(strings.TrimSpace(out), "Created schematic ")
	if len(id) != 64 {
		t.Fatalf("schematics create: got %q, want Created schematic ID", out)
	}
	if out := ok("schematics", "create", "-f", jsonFile); strings.TrimSpace(out) != "Exists already: schematic "+id {
		t.Errorf("schematics create of the same content as JSON: got %q, want it to exist as %s", out, id)
	}
	if out := ok("schematics", "show", id); out != "boot: network\nkernel_args:\n- console=ttyS0\nlabels:\n  rack: a1\n" {
		t.Errorf("schematics show: got %q", out)
	}
	out = ok("schematics", "list")
	if !strings.Contains(out, "ID") || !strings.Contains(out, id+"  network  rack=a1") {
		t.Errorf("schematics list: got\n%s", out)
	}

	// A role's default schematic.
	tmpl := write("worker.tmpl", "hostname: {{.Hostname}}\n")
	if out := ok("configs", "set", "worker", tmpl, "--schematic", id); !strings.Contains(out, "get schematic "+id) {
		t.Errorf("configs set --schematic: got %q, want it to name the default schematic", out)
	}
	if out := ok("configs", "list"); !strings.Contains(out, "SCHEMATIC") || !strings.Contains(out, id[:12]) {
		t.Errorf("configs list: got\n%s\nwant the default schematic", out)
	}
	if r := raw("configs", "set", "db", tmpl, "--schematic", strings.Repeat("0", 64)); r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("configs set with an unknown schematic: exit %d, stderr %q", r.code, r.stderr)
	}

	bad := write("bad.yaml", "kernel_args: [quiet]\nfiles:\n- {path: ../etc/shadow, content: x}\n")
	if r := raw("schematics", "create", "-f", bad); r.code == 0 || !strings.Contains(r.stderr, "field files[0].path") {
		t.Errorf("schematics create of a bad file: exit %d, stderr %q; want an error naming files[0].path", r.code, r.stderr)
	}
	if r := raw("schematics", "show", strings.Repeat("0", 64)); r.code == 0 || !strings.Contains(r.stderr, "no schematic") {
		t.Errorf("schematics show of an unknown ID: exit %d, stderr %q", r.code, r.stderr)
	}
}
