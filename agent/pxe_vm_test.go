//go:build cgo && linux

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestNetworkBootInVM network-boots a QEMU machine (BIOS, e1000 with the
// iPXE option ROM of ipxe-qemu, swtpm) on a tap in a network namespace
// the test creates, against attestationd running in that namespace with
// its DHCP server in full mode, TFTP and HTTP boot: firmware DHCP, the
// iPXE script, the kernel and the agent's initramfs over HTTP, the
// agent's own DHCP lease, registration and attestation, approval through
// the REST API, and the config. It needs root, ip, curl,
// qemu-system-x86_64, swtpm, ipxe-qemu and a Debian kernel with its e1000
// module; it skips without them, and under -short.
func TestNetworkBootInVM(t *testing.T) {
	if testing.Short() {
		t.Skip("network-boots a VM (a minute or two under TCG)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace, a bridge and a tap")
	}
	var missing []string
	tools := map[string]string{}
	for _, name := range []string{"ip", "curl", "qemu-system-x86_64", "swtpm"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
		}
		tools[name] = p
	}
	const rom = "/usr/lib/ipxe/qemu/pxe-e1000.rom"
	if _, err := os.Stat(rom); err != nil {
		missing = append(missing, rom+" (ipxe-qemu)")
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		missing = append(missing, "a kernel in /boot (linux-image-amd64)")
	}
	if len(missing) > 0 {
		t.Skipf("needs %s", strings.Join(missing, ", "))
	}
	kernel := kernels[len(kernels)-1]
	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	e1000 := filepath.Join("/lib/modules", release, "kernel/drivers/net/ethernet/intel/e1000/e1000.ko")
	if _, err := os.Stat(e1000); err != nil {
		t.Skipf("no e1000 module for %s: %v", release, err)
	}
	start := time.Now()
	dir := t.TempDir()

	// The boot assets under the names the boot decision serves.
	assets := filepath.Join(dir, "assets")
	if err := os.Mkdir(assets, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"vmlinuz": kernel, "initrd.img": agentInitramfs(t, dir, release, e1000)} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(assets, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	daemonBin := filepath.Join(dir, "attestationd")
	if out, err := exec.Command("go", "build", "-o", daemonBin, "../controlplane/cmd/attestationd").CombinedOutput(); err != nil {
		t.Fatalf("build attestationd: %v\n%s", err, out)
	}

	// The link: a bridge with the daemon's address and the VM's tap.
	ns := fmt.Sprintf("attpxe%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(tools["ip"], args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command(tools["ip"], "netns", "del", ns).Run() })
	ip("-n", ns, "link", "set", "lo", "up")
	ip("-n", ns, "link", "add", "br0", "type", "bridge")
	ip("-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ip("-n", ns, "link", "set", "tap0", "master", "br0")
	ip("-n", ns, "addr", "add", "10.78.0.1/24", "dev", "br0")
	ip("-n", ns, "link", "set", "tap0", "up")
	ip("-n", ns, "link", "set", "br0", "up")
	inNS := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, tools["ip"], append([]string{"netns", "exec", ns, name}, args...)...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)

	// The daemon, in the namespace, serving DHCP (full), TFTP and HTTP
	// boot on the bridge.
	const (
		token = "pxe-test-token-0123456789abcdef"
		url   = "http://10.78.0.1:9000"
	)
	daemon := inNS(ctx, daemonBin,
		"--listen", "10.78.0.1:9000", "--public-url", url, "--data-dir", filepath.Join(dir, "var"),
		"--admin-token", token, "--ek-policy", "any", "--heartbeat-interval", "2s",
		"--pxe-interface", "br0", "--dhcp-mode", "full", "--dhcp-range", "10.78.0.100-10.78.0.150",
		"--tftp-listen", "10.78.0.1:69", "--boot-assets", assets, "--ipxe-dir", "/usr/lib/ipxe",
		"--boot-kernel-args", "console=ttyS0 quiet panic=-1")
	dlog := &consoleLog{t: t, prefix: "daemon: ", changed: make(chan struct{})}
	daemon.Stdout, daemon.Stderr = dlog, dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Kill()
		daemon.Wait()
		dlog.stop()
	})
	dlog.wait(t, `msg="dhcp serving"`, 30*time.Second)
	dlog.wait(t, `msg="tftp listening"`, 30*time.Second)
	dlog.wait(t, `msg=listening`, 30*time.Second)

	// api calls the daemon's REST API from inside the namespace.
	api := func(method, path, body string, out any) error {
		args := []string{"-sS", "-f", "-X", method, "-H", "Authorization: Bearer " + token, "-H", "Content-Type: application/json"}
		if body != "" {
			args = append(args, "-d", body)
		}
		b, err := inNS(ctx, "curl", append(args, url+path)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", method, path, err, b)
		}
		if out != nil {
			return json.Unmarshal(b, out)
		}
		return nil
	}

	// The TFTP step. QEMU's option ROM is iPXE already, so the daemon
	// hands it the script URL and the VM never chainloads undionly.kpxe;
	// a real TFTP client on the same bridge fetches it as a non-iPXE PXE
	// firmware would (blksize as PXE ROMs ask).
	if atftp, err := exec.LookPath("atftp"); err != nil {
		t.Log("atftp missing (Debian package atftp): the TFTP transfer of undionly.kpxe is not checked")
	} else {
		got := filepath.Join(dir, "undionly.kpxe")
		if out, err := inNS(ctx, atftp, "--option", "blksize 1468", "-g", "-r", "undionly.kpxe", "-l", got, "10.78.0.1").CombinedOutput(); err != nil {
			t.Fatalf("atftp get undionly.kpxe: %v\n%s", err, out)
		}
		a, err1 := os.ReadFile(got)
		b, err2 := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
		if err1 != nil || err2 != nil || len(a) == 0 || string(a) != string(b) {
			t.Fatalf("undionly.kpxe over TFTP: %d bytes (%v), want the %d bytes of /usr/lib/ipxe/undionly.kpxe (%v)", len(a), err1, len(b), err2)
		}
		dlog.wait(t, `msg="tftp transfer" component=tftp`, 10*time.Second)
	}

	// The machine: BIOS, network boot first, a software TPM.
	sock := startSWTPM(t, tools["swtpm"], dir)
	const (
		mac  = "52:54:00:78:00:01"
		uuid = "5f2d6c1e-78a0-4b1c-9d3e-0a1b2c3d4e5f"
	)
	vm := inNS(ctx, tools["qemu-system-x86_64"], "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
		"-boot", "n", "-uuid", uuid,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "e1000,netdev=n0,mac="+mac+",romfile="+rom,
		"-chardev", "socket,id=chrtpm,path="+sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
	console := &consoleLog{t: t, changed: make(chan struct{})}
	vm.Stdout, vm.Stderr = console, console
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Process.Kill()
		vm.Wait()
		console.stop()
	})

	// Firmware to kernel, as the daemon saw it.
	for _, step := range []string{
		`msg="dhcp offer" component=dhcp mac=` + mac + ` arch=bios ipxe=true ip=10.78.0.`,
		`msg="boot script" component=boot mac=` + mac + ` uuid=` + uuid + ` arch=x86_64-pcbios action=agent`,
		`msg="boot asset" component=boot asset=vmlinuz mac=` + mac,
		`msg="boot asset" component=boot asset=initrd.img mac=` + mac,
	} {
		dlog.wait(t, step, 2*time.Minute)
	}
	t.Logf("script, kernel and initramfs fetched after %s", time.Since(start).Round(time.Second))

	// The agent.
	for _, step := range []string{
		`msg="module loaded" module=e1000`, `msg="dhcp lease" link=eth0 address=10.78.0.`,
		`msg="tpm opened"`, `msg=registered`, `msg="credential activated"`, `msg="quote sent"`,
	} {
		console.wait(t, step, 3*time.Minute)
	}
	waiting := console.wait(t, `msg="waiting for approval"`, time.Minute)
	id := regexp.MustCompile(`machine=([0-9a-f-]{36})`).FindStringSubmatch(waiting)
	if id == nil {
		t.Fatalf("no machine ID in %q", waiting)
	}
	if err := api("POST", "/api/v1/machines/"+id[1]+"/approve", `{"role":"worker","hostname":"pxe-1"}`, nil); err != nil {
		t.Fatal(err)
	}
	console.wait(t, `msg="config written"`, time.Minute)

	// The event log.
	type event struct {
		Seq  string `json:"seq"`
		Type string `json:"type"`
	}
	var types []string
	deadline := time.Now().Add(time.Minute)
	for {
		var res struct {
			Events []event `json:"events"`
		}
		if err := api("GET", "/api/v1/events?machine="+id[1], "", &res); err != nil {
			t.Fatal(err)
		}
		types = types[:0]
		for _, e := range res.Events {
			types = append(types, e.Type)
		}
		if strings.Contains(strings.Join(types, " "), "node.configured") || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	want := []string{"node.registered", "node.online", "node.provisioned", "node.configured"}
	if got := strings.Join(types, " "); got != strings.Join(want, " ") {
		t.Errorf("events of machine %s: %s; want %s", id[1], got, strings.Join(want, " "))
	}
	var m struct {
		Machine struct {
			State string   `json:"state"`
			IP    string   `json:"ip"`
			MACs  []string `json:"macs"`
		} `json:"machine"`
	}
	if err := api("GET", "/api/v1/machines/"+id[1], "", &m); err != nil {
		t.Fatal(err)
	}
	if m.Machine.State != "provisioned" || !strings.HasPrefix(m.Machine.IP, "10.78.0.") {
		t.Errorf("machine %s: state %q ip %q; want provisioned with an address of the pool", id[1], m.Machine.State, m.Machine.IP)
	}
	t.Logf("network boot to configured in %s: events %s", time.Since(start).Round(time.Second), strings.Join(types, " "))
}
