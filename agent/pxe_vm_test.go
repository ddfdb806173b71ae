//go:build cgo && linux

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/internal/testenv"
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
	const rom = "/usr/lib/ipxe/qemu/pxe-e1000.rom"
	testenv.Integration(t, "BIOS VM network boot (iPXE ROM, e1000, swtpm)")
	// The boot assets make boot-assets makes: every default NIC driver.
	lab := newPXELab(t, "attpxe", bootassets.DefaultModules, "e1000", map[string]string{rom: "ipxe-qemu"})

	// The TFTP step. QEMU's option ROM is iPXE already, so the daemon
	// hands it the script URL and the VM never chainloads undionly.kpxe;
	// a real TFTP client on the same bridge fetches it as a non-iPXE PXE
	// firmware would (blksize as PXE ROMs ask).
	got := filepath.Join(lab.dir, "undionly.kpxe")
	if out, err := lab.inNS(lab.tools["atftp"], "--option", "blksize 1468", "-g", "-r", "undionly.kpxe", "-l", got, pxeServerIP).CombinedOutput(); err != nil {
		t.Fatalf("atftp get undionly.kpxe: %v\n%s", err, out)
	}
	a, err1 := os.ReadFile(got)
	b, err2 := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
	if err1 != nil || err2 != nil || len(a) == 0 || string(a) != string(b) {
		t.Fatalf("undionly.kpxe over TFTP: %d bytes (%v), want the %d bytes of /usr/lib/ipxe/undionly.kpxe (%v)", len(a), err1, len(b), err2)
	}
	lab.daemon.wait(t, `msg="tftp transfer" component=tftp`, 10*time.Second)

	// The machine: BIOS, network boot first, a software TPM.
	const (
		mac  = "52:54:00:78:00:01"
		uuid = "5f2d6c1e-78a0-4b1c-9d3e-0a1b2c3d4e5f"
	)
	console := lab.bootVM("-boot", "n", "-uuid", uuid,
		"-device", "e1000,netdev=n0,mac="+mac+",romfile="+rom, "-device", "tpm-tis,tpmdev=tpm0")

	// Firmware to kernel, as the daemon saw it.
	for _, step := range []string{
		`msg="dhcp offer" component=dhcp mac=` + mac + ` arch=bios ipxe=true ip=10.78.0.`,
		`msg="boot script" component=boot mac=` + mac + ` uuid=` + uuid + ` arch=x86_64-pcbios action=agent`,
		`msg="boot asset" component=boot asset=vmlinuz mac=` + mac,
		`msg="boot asset" component=boot asset=initrd.img mac=` + mac,
	} {
		lab.daemon.wait(t, step, 2*time.Minute)
	}

	// Approved with a schematic that network-boots, the machine boots its
	// image when power-cycled (the same NIC and TPM): the same agent, from
	// /images/, with the schematic's command line, which finds the machine
	// provisioned and brings it online again.
	var sc struct {
		ID string `json:"id"`
	}
	if err := lab.api("POST", "/api/v1/schematics", `{"schematic": {"boot": "network", "kernel_args": ["console=ttyS0", "panic=-1", "image.marker=pxe"]}}`, &sc); err != nil {
		t.Fatal(err)
	}
	id := lab.enroll(console, "pxe-1", sc.ID)
	// The agent loaded the driver of the VM's NIC, not those of NICs it
	// lacks.
	_, ready, _ := console.when(`msg="modules ready"`)
	notNeeded := strings.Split(regexp.MustCompile(`not_needed=(\S*)`).FindStringSubmatch(ready + " not_needed=")[1], ",")
	if !slices.Contains(notNeeded, "r8169") || slices.Contains(notNeeded, "e1000") {
		t.Errorf("agent: %s; want e1000 loaded and the other NIC drivers (r8169...) not needed", ready)
	}
	// The firmware here is iPXE itself (QEMU's option ROM): its DHCP is
	// the firmware's, and no TFTP.
	biosPhases := func(console *consoleLog, initrd time.Time, online int) []bootPhase {
		return append([]bootPhase{
			{"iPXE ROM opens the NIC", seen(console, "net0: "+mac+" using")},
			{"first DHCP offer", seen(lab.daemon, `msg="dhcp offer" component=dhcp mac=`+mac)},
			{"firmware DHCP (iPXE ROM)", seen(lab.daemon, `msg="dhcp ack" component=dhcp mac=`+mac)},
			{"iPXE network configured", seen(console, "Configuring (net0 "+mac+")")},
		}, lab.agentPhases(console, mac, initrd, nth(lab.eventTimes(t, id, "node.online"), online))...)
	}
	logPhases(t, "BIOS network boot", lab.vmStart, append(
		biosPhases(console, seen(lab.daemon, `msg="boot asset" component=boot asset=initrd.img mac=`+mac), 0),
		bootPhase{"approved (REST API)", lab.approved},
		bootPhase{"node.configured", nth(lab.eventTimes(t, id, "node.configured"), 0)}))
	lab.daemon.wait(t, `msg="image built for an approved machine" component=images machine=`+id, time.Minute)
	lab.powerOff()
	lab.daemon.mark()
	console = lab.bootVM("-boot", "n", "-uuid", uuid,
		"-device", "e1000,netdev=n0,mac="+mac+",romfile="+rom, "-device", "tpm-tis,tpmdev=tpm0")
	lab.daemon.wait(t, `msg="boot script" component=boot mac=`+mac+` uuid=`+uuid+` arch=x86_64-pcbios action=image`, 2*time.Minute)
	if cmdline := console.wait(t, "Command line:", 2*time.Minute); !strings.Contains(cmdline, "image.marker=pxe") {
		t.Errorf("after the reset the kernel's command line is %q, want the schematic's", cmdline)
	}
	if attested := console.wait(t, `msg=attested`, 3*time.Minute); !strings.Contains(attested, "machine="+id+" state=provisioned") {
		t.Errorf("booted into its image, the agent says %q, want machine %s provisioned", attested, id)
	}
	var online struct {
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	if err := lab.api("GET", "/api/v1/events?machine="+id+"&type=node.online", "", &online); err != nil {
		t.Fatal(err)
	}
	if len(online.Events) != 2 {
		t.Errorf("machine %s has %d node.online events, want 2 (agent, then its image)", id, len(online.Events))
	}
	// The image's kernel and initramfs come from /images/, which the
	// daemon does not log: iPXE shows them fetched.
	logPhases(t, "BIOS network boot of the provisioned image", lab.vmStart,
		biosPhases(console, seen(console, "initramfs... ok"), 1))
}

// The network-boot lab's link: the daemon's address on the bridge, its
// URL, and the DHCP pool the machines get their addresses from.
const (
	pxeServerIP = "10.78.0.1"
	pxeURL      = "http://" + pxeServerIP + ":9000"
	pxePool     = "10.78.0."
	pxeToken    = "pxe-test-token-0123456789abcdef"
)

// pxeLab is a network namespace the test creates, holding a bridge with
// the daemon's address and a tap for one VM, with attestationd running in
// it and serving DHCP (full mode), TFTP and HTTP boot on the bridge: no
// boot traffic leaves the namespace.
type pxeLab struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	ns    string
	tools map[string]string
	// modules are the kernel modules of the agent's initramfs; nic the
	// one the VM's NIC needs.
	modules []string
	nic     string
	// daemon is attestationd's log.
	daemon *consoleLog
	// powerOff stops the running VM and its TPM.
	powerOff func()
	// vmStart is when the running VM was started; approved when enroll
	// approved its machine.
	vmStart, approved time.Time
}

// newPXELab checks what network-booting a VM needs (root, ip, curl,
// atftp, qemu-system-x86_64, swtpm, apt-get and dpkg-deb, and files, each
// with the Debian package that ships it) and skips the test without it
// (fails under CI), and under -short. Otherwise it builds the boot assets
// as make boot-assets does (Debian's kernel package, the agent's
// initramfs with the NIC modules) and the daemon, and starts the lab in
// the namespace prefix+PID; everything is removed when the test ends.
func newPXELab(t *testing.T, prefix string, modules []string, nic string, files map[string]string) *pxeLab {
	t.Helper()
	if testing.Short() {
		t.Skip("network-boots a VM (minutes under TCG)")
	}
	testenv.Root(t, "creating a network namespace, a bridge and a tap")
	var missing []string
	tools := map[string]string{}
	for name, pkg := range map[string]string{"ip": "iproute2", "curl": "curl", "atftp": "atftp", "qemu-system-x86_64": "qemu-system-x86", "swtpm": "swtpm",
		"apt-get": "apt", "dpkg-deb": "dpkg"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name+" ("+pkg+")")
		}
		tools[name] = p
	}
	slices.Sort(missing)
	for _, f := range slices.Sorted(maps.Keys(files)) {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f+" ("+files[f]+")")
		}
	}
	if len(missing) > 0 {
		testenv.Missing(t, "no %s", strings.Join(missing, ", "))
	}
	l := &pxeLab{t: t, dir: t.TempDir(), ns: fmt.Sprintf("%s%d", prefix, os.Getpid()), tools: tools, modules: modules, nic: nic}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	l.ctx = ctx

	// The boot assets, as make boot-assets makes them.
	assets := filepath.Join(l.dir, "assets")
	res, err := bootassets.Build(ctx, bootassets.Options{Out: assets, Agent: buildAgent(t, l.dir), Modules: modules})
	if err != nil {
		t.Fatalf("boot assets: %v", err)
	}
	t.Logf("boot assets: kernel %s, initrd.img %d bytes, modules %v with their dependencies", res.Release, res.InitrdSize, modules)
	daemonBin := filepath.Join(l.dir, "attestationd")
	if out, err := exec.Command("go", "build", "-o", daemonBin, "../controlplane/cmd/attestationd").CombinedOutput(); err != nil {
		t.Fatalf("build attestationd: %v\n%s", err, out)
	}

	// The link: a bridge with the daemon's address and the VM's tap.
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(tools["ip"], args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", l.ns)
	t.Cleanup(func() { exec.Command(tools["ip"], "netns", "del", l.ns).Run() })
	ip("-n", l.ns, "link", "set", "lo", "up")
	ip("-n", l.ns, "link", "add", "br0", "type", "bridge")
	ip("-n", l.ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ip("-n", l.ns, "link", "set", "tap0", "master", "br0")
	ip("-n", l.ns, "addr", "add", pxeServerIP+"/24", "dev", "br0")
	ip("-n", l.ns, "link", "set", "tap0", "up")
	ip("-n", l.ns, "link", "set", "br0", "up")

	// The daemon, in the namespace, serving DHCP (full), TFTP and HTTP
	// boot on the bridge.
	daemon := l.inNS(daemonBin,
		"--listen", pxeServerIP+":9000", "--public-url", pxeURL, "--data-dir", filepath.Join(l.dir, "var"),
		"--admin-token", pxeToken, "--ek-policy", "any", "--heartbeat-interval", "2s",
		"--pxe-interface", "br0", "--dhcp-mode", "full", "--dhcp-range", pxePool+"100-"+pxePool+"150",
		"--tftp-listen", pxeServerIP+":69", "--boot-assets", assets, "--ipxe-dir", "/usr/lib/ipxe",
		"--boot-kernel-args", "console=ttyS0 quiet panic=-1")
	l.daemon = &consoleLog{t: t, prefix: "daemon: ", changed: make(chan struct{})}
	daemon.Stdout, daemon.Stderr = l.daemon, l.daemon
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Kill()
		daemon.Wait()
		l.daemon.stop()
	})
	l.daemon.wait(t, `msg="dhcp serving"`, 30*time.Second)
	l.daemon.wait(t, `msg="tftp listening"`, 30*time.Second)
	l.daemon.wait(t, `msg=listening`, 30*time.Second)
	return l
}

// inNS runs a command in the lab's namespace; it is killed when the lab
// times out.
func (l *pxeLab) inNS(name string, args ...string) *exec.Cmd {
	return exec.CommandContext(l.ctx, l.tools["ip"], append([]string{"netns", "exec", l.ns, name}, args...)...)
}

// api calls the daemon's REST API from inside the namespace.
func (l *pxeLab) api(method, path, body string, out any) error {
	args := []string{"-sS", "-f", "-X", method, "-H", "Authorization: Bearer " + pxeToken, "-H", "Content-Type: application/json"}
	if body != "" {
		args = append(args, "-d", body)
	}
	b, err := l.inNS("curl", append(args, pxeURL+path)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", method, path, err, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// bootVM powers on the lab's machine under TCG with a fresh swtpm and
// returns its serial console. args add the firmware, the boot order and
// the devices: the NIC on netdev n0 (the lab's tap) and the TPM on
// tpmdev tpm0.
func (l *pxeLab) bootVM(args ...string) *consoleLog {
	t := l.t
	t.Helper()
	sock, stopTPM := runSWTPM(t, l.tools["swtpm"], l.dir)
	vm := l.inNS(l.tools["qemu-system-x86_64"], append([]string{"-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-chardev", "socket,id=chrtpm,path=" + sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm"}, args...)...)
	console := &consoleLog{t: t, changed: make(chan struct{})}
	vm.Stdout, vm.Stderr = console, console
	l.vmStart = time.Now()
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	l.powerOff = func() {
		once.Do(func() {
			vm.Process.Kill()
			vm.Wait()
			console.stop()
			stopTPM()
		})
	}
	t.Cleanup(l.powerOff)
	return console
}

// enroll follows the network-booted agent on console: its NIC driver,
// its own DHCP lease, registration and attestation; approves the machine
// as hostname through the REST API; and checks the config is fetched,
// the machine's events and its state.
func (l *pxeLab) enroll(console *consoleLog, hostname, schematicID string) string {
	t := l.t
	t.Helper()
	for _, step := range []string{
		`msg="module loaded" module=` + l.nic, `msg="modules ready"`, `msg="dhcp lease" link=eth0 address=` + pxePool,
		`msg="tpm opened"`, `msg=registered`, `msg="credential activated"`, `msg="quote sent"`,
	} {
		console.wait(t, step, 3*time.Minute)
	}
	waiting := console.wait(t, `msg="waiting for approval"`, time.Minute)
	id := regexp.MustCompile(`machine=([0-9a-f-]{36})`).FindStringSubmatch(waiting)
	if id == nil {
		t.Fatalf("no machine ID in %q", waiting)
	}
	l.approved = time.Now()
	if err := l.api("POST", "/api/v1/machines/"+id[1]+"/approve", `{"role":"worker","hostname":"`+hostname+`","schematic_id":"`+schematicID+`"}`, nil); err != nil {
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
		if err := l.api("GET", "/api/v1/events?machine="+id[1], "", &res); err != nil {
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
	if err := l.api("GET", "/api/v1/machines/"+id[1], "", &m); err != nil {
		t.Fatal(err)
	}
	if m.Machine.State != "provisioned" || !strings.HasPrefix(m.Machine.IP, pxePool) {
		t.Errorf("machine %s: state %q ip %q; want provisioned with an address of the pool", id[1], m.Machine.State, m.Machine.IP)
	}
	t.Logf("network boot to configured in %s: events %s", time.Since(l.vmStart).Round(time.Second), strings.Join(types, " "))
	return id[1]
}
