//go:build cgo && linux

package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/internal/testenv"
)

// TestISOBootInVM builds the boot assets from Debian's packages, has a
// running daemon build a schematic's ISO (images build), downloads it as
// an operator would, and boots it in QEMU, once under SeaBIOS (isolinux)
// and once under OVMF (GRUB), each with its own swtpm and no -kernel: the
// agent on the ISO enrolls its machine to node.online, seen both on the
// serial console (the agent's own log line) and in the API. The BIOS
// machine is then approved and heartbeats.
func TestISOBootInVM(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian's kernel package and boots two VMs")
	}
	const (
		code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
		vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	)
	testenv.Integration(t, "ISO boot in VMs (SeaBIOS and OVMF, swtpm)")
	qemu := testenv.LookPath(t, "qemu-system-x86_64", "qemu-system-x86")
	swtpm := testenv.LookPath(t, "swtpm", "swtpm")
	for _, tool := range []struct{ name, pkg string }{{"apt-get", "apt"}, {"dpkg-deb", "dpkg"}} {
		testenv.LookPath(t, tool.name, tool.pkg)
	}
	testenv.File(t, code, "ovmf")
	testenv.File(t, vars, "ovmf")

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	assets := filepath.Join(dir, "boot")
	if _, err := bootassets.Build(ctx, bootassets.Options{Out: assets, Agent: buildAgent(t, dir)}); err != nil {
		t.Fatal(err)
	}

	// The daemon, on a port the guests reach as 10.0.2.2.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	public := fmt.Sprintf("http://10.0.2.2:%d", port)
	d := startDaemon(t, daemontest.Options{}, map[string]any{
		"listen":      fmt.Sprintf("127.0.0.1:%d", port),
		"public_url":  public,
		"boot_assets": assets,
	})

	var created struct {
		ID string `json:"id"`
	}
	rest(t, d, http.MethodPost, "/api/v1/schematics",
		`{"schematic": {"kernel_args": ["console=ttyS0", "panic=-1"], "agent": {"tpm": "required"}, "labels": {"test": "iso"}}}`, &created)
	start := time.Now()
	var built struct {
		Built  bool   `json:"built"`
		IsoURL string `json:"iso_url"`
	}
	rest(t, d, http.MethodPost, "/api/v1/schematics/"+created.ID+"/image", "{}", &built)
	if !built.Built || built.IsoURL != public+"/images/"+created.ID+"/attestation.iso" {
		t.Fatalf("image build: %+v", built)
	}
	resp, err := http.Get(d.URL + "/images/" + created.ID + "/attestation.iso")
	if err != nil {
		t.Fatal(err)
	}
	isoPath := filepath.Join(dir, "attestation.iso")
	f, err := os.Create(isoPath)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, resp.Body)
	resp.Body.Close()
	f.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download the ISO: %d, %v", resp.StatusCode, err)
	}
	t.Logf("images build to a downloaded ISO of %d bytes in %v", n, time.Since(start).Round(time.Millisecond))

	boot := func(t *testing.T, name string, firmware ...string) (*consoleLog, string) {
		vmDir := filepath.Join(dir, name)
		if err := os.Mkdir(vmDir, 0o755); err != nil {
			t.Fatal(err)
		}
		sock := startSWTPM(t, swtpm, vmDir)
		args := append(firmware, "-accel", "tcg", "-m", "1024", "-nographic", "-no-reboot",
			"-cdrom", isoPath, "-boot", "d",
			"-netdev", "user,id=n0", "-device", "e1000,netdev=n0",
			"-chardev", "socket,id=chrtpm,path="+sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
		vm := exec.CommandContext(ctx, qemu, args...)
		console := &consoleLog{t: t, prefix: name + ": ", changed: make(chan struct{})}
		vm.Stdout, vm.Stderr = console, console
		if err := vm.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			vm.Process.Kill()
			vm.Wait()
			console.stop()
		})
		// The kernel's command line is the ISO's: its boot loader read it.
		cmdline := console.wait(t, "Command line:", 5*time.Minute)
		if !strings.Contains(cmdline, "attestation.url="+public) || !strings.Contains(cmdline, "attestation.require_tpm=1") {
			t.Errorf("kernel command line %q: want the schematic's", cmdline)
		}
		for _, step := range []string{`msg="tpm opened" spec=/dev/tpmrm0`, `msg=registered`, `msg="credential activated"`, `msg=attested`} {
			console.wait(t, step, 3*time.Minute)
		}
		waiting := console.wait(t, `msg="waiting for approval"`, time.Minute)
		id := regexp.MustCompile(`machine=([0-9a-f-]{36})`).FindStringSubmatch(waiting)
		if id == nil {
			t.Fatalf("no machine ID in %q", waiting)
		}
		var online struct {
			Events []struct {
				Type      string `json:"type"`
				MachineID string `json:"machine_id"`
			} `json:"events"`
		}
		rest(t, d, http.MethodGet, "/api/v1/events?machine="+id[1]+"&type=node.online", "", &online)
		if len(online.Events) != 1 || online.Events[0].MachineID != id[1] {
			t.Errorf("node.online events of machine %s: %+v, want one", id[1], online.Events)
		}
		return console, id[1]
	}

	t.Run("SeaBIOS", func(t *testing.T) {
		console, id := boot(t, "bios")
		approve(t, d, id, "iso-bios")
		console.wait(t, `msg="config written"`, time.Minute)
		console.wait(t, `msg=heartbeat`, time.Minute)
	})
	t.Run("OVMF", func(t *testing.T) {
		varsCopy := filepath.Join(dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(vars)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(varsCopy, b, 0o644); err != nil {
			t.Fatal(err)
		}
		console, _ := boot(t, "uefi", "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy)
		if !bytes.Contains(console.bytes(), []byte("GRUB")) {
			t.Error("the UEFI machine's console never showed GRUB")
		}
	})
}

// rest calls the daemon's REST API as the admin and decodes the answer
// into out (nil: ignore it).
func rest(t *testing.T, d *daemontest.Daemon, method, path, body string, out any) {
	t.Helper()
	req, err := http.NewRequest(method, d.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = d.AuthHeader()
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
}
