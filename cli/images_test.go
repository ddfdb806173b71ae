package cli_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/images/bootassets/bootassetstest"
)

// TestImages: a schematic naming a module the boot assets' kernel lacks is
// refused; images build builds once and says so the second time; the ISO
// it names is served with the printed SHA-256; node.image_created is
// recorded; a machine approved with a network-boot schematic gets its ISO
// URL in node.provisioned and its image in the iPXE script.
func TestImages(t *testing.T) {
	assets := bootassetstest.Write(t)
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.BootAssets = assets }})
	ok, raw := cliFor(t, d)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if r := raw("schematics", "create", "-f", file("bad.yaml", "modules: [dummy, no_such_module]\n")); r.code == 0 ||
		!strings.Contains(r.stderr, "field modules[1]") || !strings.Contains(r.stderr, "not a module of the boot assets' kernel") {
		t.Errorf("a schematic with an unknown module: exit %d, stderr %q", r.code, r.stderr)
	}
	out := ok("schematics", "create", "-f", file("net.yaml", "boot: network\nmodules: [dummy]\nkernel_args: [console=ttyS0]\n"))
	id := strings.TrimPrefix(strings.TrimSpace(out), "Created schematic ")

	out = ok("images", "build", id)
	if !strings.Contains(out, "schematic "+id+": built in") {
		t.Fatalf("images build: got\n%s", out)
	}
	var isoURL, isoSum string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "attestation.iso" {
			isoSum, isoURL = f[2], f[3]
		}
	}
	if isoURL != d.URL+"/images/"+id+"/attestation.iso" {
		t.Fatalf("images build: no ISO URL for %s in\n%s", d.URL, out)
	}
	if out := ok("images", "build", id); !strings.Contains(out, "built before") {
		t.Errorf("images build a second time: got\n%s", out)
	}
	resp, err := http.Get(isoURL) // unauthenticated: machines boot from it
	if err != nil {
		t.Fatal(err)
	}
	iso, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(iso)
	if resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != isoSum || resp.Header.Get("ETag") != `"`+isoSum+`"` {
		t.Errorf("GET %s: %d, sha256 %x, ETag %s; want 200 and %s", isoURL, resp.StatusCode, sum, resp.Header.Get("ETag"), isoSum)
	}
	if r := raw("images", "build", strings.Repeat("0", 64)); r.code == 0 || !strings.Contains(r.stderr, "no schematic") {
		t.Errorf("images build of an unknown schematic: exit %d, stderr %q", r.code, r.stderr)
	}

	// A machine approved with the schematic.
	m := attested(t, d, ok, "imaged", "--mac", "52:54:00:00:00:42")
	ok("machines", "approve", m.ID, "--role", "worker", "--hostname", "node-1", "--schematic", id)

	type event struct {
		Type      string          `json:"type"`
		MachineID string          `json:"machineId"`
		Payload   json.RawMessage `json:"payload"`
	}
	out = ok("-o", "json", "events", "list")
	var evs []event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatal(err)
	}
	var images, provisioned int
	for _, e := range evs {
		switch e.Type {
		case "node.image_created":
			images++
			var p struct {
				SchematicID string `json:"schematic_id"`
				ISOURL      string `json:"iso_url"`
				SHA256      string `json:"sha256"`
			}
			json.Unmarshal(e.Payload, &p)
			if p.SchematicID != id || p.ISOURL != isoURL || p.SHA256 != isoSum || e.MachineID != "" {
				t.Errorf("node.image_created: %s (machine %q)", e.Payload, e.MachineID)
			}
		case "node.provisioned":
			provisioned++
			var p struct {
				ISOURL string `json:"iso_url"`
			}
			if json.Unmarshal(e.Payload, &p); p.ISOURL != isoURL {
				t.Errorf("node.provisioned carries no ISO URL: %s", e.Payload)
			}
		}
	}
	if images != 1 || provisioned != 1 {
		t.Errorf("%d node.image_created and %d node.provisioned, want 1 each (the image was built before the approval)\n%+v", images, provisioned, evs)
	}
	// Approval with a schematic never built builds it, for that machine.
	out = ok("schematics", "create", "-f", file("disk.yaml", "labels: {rack: b2}\n"))
	disk := strings.TrimPrefix(strings.TrimSpace(out), "Created schematic ")
	m2 := attested(t, d, ok, "imaged-2")
	ok("machines", "approve", m2.ID, "--role", "db", "--hostname", "node-2", "--schematic", disk)
	for deadline := time.Now().Add(20 * time.Second); ; {
		out := ok("-o", "json", "events", "list", "--type", "node.image_created", "--machine", m2.ID)
		if strings.Contains(out, disk) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no node.image_created for machine %s after its approval:\n%s", m2.ID, out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The boot decision: its image, over iPXE.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/boot/ipxe?mac=52:54:00:00:00:42")
		if err != nil {
			t.Fatal(err)
		}
		script, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(script), "kernel "+d.URL+"/images/"+id+"/vmlinuz initrd=initrd.img attestation.url="+d.URL+" console=ttyS0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("iPXE script of the provisioned machine:\n%s", script)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// attested registers a machine and records its attestation directly (there
// is no agent to attest with).
func attested(t *testing.T, d *daemontest.Daemon, ok func(...string) string, seed string, extra ...string) machineJSON {
	t.Helper()
	m := register(t, ok, seed, extra...)
	st, err := store.Open(context.Background(), d.DatabasePath())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := machines.New(st, nil).Attested(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	return m
}
