package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attestation/attestation/boot/dhcp"
	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/initramfs"
	"github.com/attestation/attestation/internal/pgtest"
	"github.com/attestation/attestation/internal/testenv"
)

// TestMain runs the boot storm's machines instead of the tests when
// started as them (machinesEnv); otherwise the tests, and stops the
// PostgreSQL server the PostgreSQL storm started (pgtest).
func TestMain(m *testing.M) {
	if spec := os.Getenv(machinesEnv); spec != "" {
		os.Exit(runMachines(spec))
	}
	os.Exit(pgtest.Run(m))
}

// stormLogEnv names a file to copy the storm daemon's log to.
const stormLogEnv = "ATTESTATION_BOOTSTORM_LOG"

// The boot storm's size: the benchmark's and the test's.
const (
	bootStormMachines     = 1000
	bootStormTestMachines = 100
	// powerOnEvery spaces the machines' power-on: 1,000 machines come
	// up over 10 s, as a rack row does when its power returns.
	powerOnEvery = 10 * time.Millisecond
)

// The storm's network: a veth pair between two namespaces the storm
// makes, the daemon's end (stormServerIface) in one, the machines' in the
// other. The machines' leased addresses are reached through the
// machines' namespace's own address (stormClientIP) rather than each by
// ARP: the host's ARP table, which every namespace shares, holds 1,024
// entries before it drops packets, and the storm's thousand would crowd
// out everyone else's.
const (
	stormServerIP    = "10.78.0.1"
	stormClientIP    = "10.78.0.2"
	stormPrefix      = "/16"
	stormPool        = "10.78.16.1-10.78.31.254"
	stormPoolNet     = "10.78.16.0/20"
	stormServerIface = "vs"
	stormClientIface = "vc"
	stormURL         = "http://" + stormServerIP + ":9000"
)

// BenchmarkBootStorm is the whole system under a boot storm: 1,000
// machines, powered on 10 ms apart, network-boot the agent from one
// attestationd and enroll (see bootmachine_test.go for what each does),
// the daemon pinned to CPU 0 and the machines to CPU 1, in two network
// namespaces joined by a veth pair. DHCP is in full mode, its leases in
// the daemon's database (durable before each ACK); the boot assets are
// the real ones (Debian's iPXE binaries and kernel, the agent's initramfs
// built as make boot-assets builds it). Every machine's EK is
// pre-registered with its MAC, role and hostname, so it is approved when
// it attests and fetches its config.
//
// Reported: ns/op, the storm from the first power-on to the last
// machine's config in hand (the machines' view); all-attested-s and
// all-configured-s, from the first power-on to the last machine's
// attestation and config fetch, as the daemon's database recorded them;
// the p50 and p99 of each phase of a machine's boot, and of the whole
// boot (power-on to config in hand); the CPU milliseconds per machine of
// the daemon and of the machines (the load generator), and what the
// daemon wrote to storage; the DHCP retransmissions; lost machines (any
// that did not end configured, which fails the benchmark). The log says
// too how busy each CPU was, other processes included. The daemon is killed with
// SIGKILL after the storm, and its database then must hold, for every
// machine, its lease, its attestation from its leased address and its
// config fetch, and a node.online and node.configured event each.
//
// Set ATTESTATION_CPUPROFILE to a file to have the daemon write its CPU
// profile there: it then stops with SIGTERM, so that it can; and
// ATTESTATION_BOOTSTORM_LOG to keep its log (info level).
func BenchmarkBootStorm(b *testing.B) {
	stormNeeds(b)
	bin := buildDaemon(b)
	assets := stormAssets(b)
	var rs []*stormReport
	for range b.N {
		rs = append(rs, bootStorm(b, bin, assets, bootStormMachines))
	}
	for _, r := range rs {
		r.log(b)
	}
	// ns/op is the storm, from the first power-on to the last machine
	// configured, not the building and checking around it.
	var storms time.Duration
	for _, r := range rs {
		storms += r.elapsed
	}
	b.ReportMetric(float64(storms)/float64(len(rs)), "ns/op")
	r := rs[len(rs)-1]
	b.ReportMetric(r.allAttested.Seconds(), "all-attested-s")
	b.ReportMetric(r.allConfigured.Seconds(), "all-configured-s")
	for i, name := range phaseNames {
		b.ReportMetric(ms(r.phase[i][0]), name+"-p50-ms")
		b.ReportMetric(ms(r.phase[i][1]), name+"-p99-ms")
	}
	b.ReportMetric(ms(r.whole[0]), "boot-p50-ms")
	b.ReportMetric(ms(r.whole[1]), "boot-p99-ms")
	b.ReportMetric(r.daemonCPUPerMachine(), "daemon-cpu-ms/machine")
	b.ReportMetric(r.loadCPUPerMachine(), "loadgen-cpu-ms/machine")
	b.ReportMetric(float64(r.daemonWrote)/1024/float64(r.machines), "daemon-written-KiB/machine")
	b.ReportMetric(float64(r.retransmits), "dhcp-retransmits")
	b.ReportMetric(float64(r.lost), "lost")
	for _, r := range rs {
		if r.lost > 0 {
			b.Fatalf("%d of %d machines lost", r.lost, r.machines)
		}
	}
}

// TestBootStorm is the boot storm's short version: 100 machines, each
// checked the same way.
func TestBootStorm(t *testing.T) {
	testenv.Integration(t, "boot storm: 100 machines DHCP (full), TFTP, HTTP boot, enroll against one attestationd in a netns")
	if testing.Short() {
		t.Skip("skipped in -short: builds attestationd and the agent's initramfs")
	}
	stormNeeds(t)
	r := bootStorm(t, buildDaemon(t), stormAssets(t), bootStormTestMachines)
	r.log(t)
	testenv.Note(t, "%s", r.summary())
	if r.lost > 0 {
		t.Fatalf("%d of %d machines lost", r.lost, r.machines)
	}
}

// bootAssets is the boot assets directory of a storm and the sums of
// every file the machines fetch.
type bootAssets struct {
	dir  string
	sums map[string]assetSum
	// what says what the files are.
	what string
}

// stormAssets makes the boot assets the daemon serves: Debian's kernel
// as installed (linux-image-amd64), and the agent's initramfs built from
// it as make boot-assets builds one (the static agent, the default NIC
// drivers and what they need). The iPXE binaries are Debian's, where the
// daemon looks by default (/usr/lib/ipxe).
func stormAssets(tb testing.TB) bootAssets {
	tb.Helper()
	for _, f := range []string{"undionly.kpxe", "snponly.efi"} {
		testenv.File(tb, filepath.Join("/usr/lib/ipxe", f), "ipxe")
	}
	var kernel, release string
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, k := range slices.Backward(kernels) {
		rel := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", rel, "modules.dep")); err == nil {
			kernel, release = k, rel
			break
		}
	}
	if kernel == "" {
		testenv.Missing(tb, "no /boot/vmlinuz-* with its modules in /lib/modules (Debian package linux-image-amd64)")
	}
	agentBin := filepath.Join(tb.TempDir(), "attestation-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", agentBin, "../../agent/cmd/attestation-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build the agent: %v\n%s", err, out)
	}
	agent, err := os.ReadFile(agentBin)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := initramfs.OpenKernel(filepath.Join("/lib/modules", release))
	if err != nil {
		tb.Fatal(err)
	}
	var initrd bytes.Buffer
	if err := initramfs.Write(&initrd, initramfs.Spec{Agent: agent, Kernel: k, Modules: bootassets.DefaultModules}); err != nil {
		tb.Fatalf("build the agent's initramfs: %v", err)
	}
	vmlinuz, err := os.ReadFile(kernel)
	if err != nil {
		tb.Fatal(err)
	}
	a := bootAssets{dir: filepath.Join(tb.TempDir(), "boot"), sums: map[string]assetSum{}}
	if err := os.Mkdir(a.dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	for name, b := range map[string][]byte{bootassets.Kernel: vmlinuz, bootassets.Initrd: initrd.Bytes()} {
		if err := os.WriteFile(filepath.Join(a.dir, name), b, 0o644); err != nil {
			tb.Fatal(err)
		}
		a.sums[name] = assetSum{Size: int64(len(b)), CRC32: crc32.Checksum(b, castagnoli)}
	}
	for _, name := range []string{"undionly.kpxe", "snponly.efi"} {
		b, err := os.ReadFile(filepath.Join("/usr/lib/ipxe", name))
		if err != nil {
			tb.Fatal(err)
		}
		a.sums[name] = assetSum{Size: int64(len(b)), CRC32: crc32.Checksum(b, castagnoli)}
	}
	a.what = fmt.Sprintf("Debian's kernel %s (%.1f MB), the agent's initramfs (%.1f MB: agent %.1f MB, %d NIC drivers), undionly.kpxe (%d KB), snponly.efi (%d KB)",
		release, float64(len(vmlinuz))/1e6, float64(initrd.Len())/1e6, float64(len(agent))/1e6, len(bootassets.DefaultModules),
		a.sums["undionly.kpxe"].Size/1000, a.sums["snponly.efi"].Size/1000)
	return a
}

// stormNetns makes the storm's two namespaces and the veth pair between
// them and returns their names; they go when the test ends.
func stormNetns(tb testing.TB) (server, client string) {
	tb.Helper()
	id := strconv.Itoa(os.Getpid())
	server, client = "bootstorm-s"+id, "bootstorm-c"+id
	ip := func(stdin string, args ...string) {
		tb.Helper()
		cmd := exec.Command("ip", append(args, "-batch", "-")...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("ip %s -batch:\n%s%v\n%s", strings.Join(args, " "), stdin, err, out)
		}
	}
	tb.Cleanup(func() {
		exec.Command("ip", "netns", "del", server).Run()
		exec.Command("ip", "netns", "del", client).Run()
	})
	ip(fmt.Sprintf("netns add %[1]s\nnetns add %[2]s\nlink add %[3]s netns %[1]s type veth peer name %[4]s netns %[2]s\n",
		server, client, stormServerIface, stormClientIface))
	ip(fmt.Sprintf("link set lo up\nlink set %[1]s up\naddr add %[2]s dev %[1]s\nroute add %[3]s via %[4]s dev %[1]s\n",
		stormServerIface, stormServerIP+stormPrefix, stormPoolNet, stormClientIP), "-n", server)
	ip(fmt.Sprintf("link set lo up\nlink set %[1]s up\naddr add %[2]s dev %[1]s\n",
		stormClientIface, stormClientIP+stormPrefix), "-n", client)
	return server, client
}

// stormDaemon is the storm's attestationd.
type stormDaemon struct {
	cmd          *exec.Cmd
	dataDir, log string
}

// startStormDaemon starts attestationd in the server namespace on CPU 0:
// the API, TFTP and DHCP (full mode, the pool in its database) on the
// veth, the production defaults otherwise (info log, written to a file;
// per-source limits), with the allowlist EK policy, which the
// pre-registrations fill.
func startStormDaemon(tb testing.TB, bin, netns string, assets bootAssets) *stormDaemon {
	tb.Helper()
	dir := tb.TempDir()
	d := &stormDaemon{dataDir: filepath.Join(dir, "data"), log: filepath.Join(dir, "attestationd.log")}
	logf, err := os.Create(d.log)
	if err != nil {
		tb.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", netns, "taskset", "-c", "0", bin,
		"--listen", stormServerIP+":9000", "--public-url", stormURL, "--data-dir", d.dataDir,
		"--ek-policy", "allowlist", "--boot-assets", assets.dir,
		"--pxe-interface", stormServerIface, "--dhcp-mode", "full", "--dhcp-range", stormPool, "--dhcp-router", stormServerIP,
		"--tftp-listen", stormServerIP+":69")
	cmd.Env = append(os.Environ(), "ATTESTATION_ADMIN_TOKEN="+stormToken)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start attestationd: %v", err)
	}
	d.cmd = cmd
	// A storm that failed half-way leaves it running.
	tb.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return d
}

// pinned waits for process pid to be the program comm (ip and taskset
// exec it) and fails the test unless it may run on the CPUs want only.
func pinned(tb testing.TB, pid int, comm, want string) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(c)) == comm {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("process %d is %q after 10s, want %s: it did not start", pid, strings.TrimSpace(string(c)), comm)
		}
	}
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			if got := strings.TrimSpace(v); got != want {
				tb.Fatalf("%s runs on CPUs %s, want %s: pinning failed", comm, got, want)
			}
			return
		}
	}
	tb.Fatalf("no Cpus_allowed_list in /proc/%d/status", pid)
}

// stormNeeds ends the test unless the machine can run a storm: root (for
// the namespaces), ip, taskset and two CPUs to pin the daemon and the
// machines apart (one CPU fails it: the figures would mean nothing).
func stormNeeds(tb testing.TB) {
	tb.Helper()
	testenv.Root(tb, "creating network namespaces")
	testenv.LookPath(tb, "ip", "iproute2")
	testenv.LookPath(tb, "taskset", "util-linux")
	if runtime.NumCPU() < 2 {
		tb.Fatalf("the boot storm pins the daemon to CPU 0 and the machines to CPU 1: this machine has %d CPU", runtime.NumCPU())
	}
}

// bootStorm runs one storm of n machines and checks it.
func bootStorm(tb testing.TB, bin string, assets bootAssets, n int) *stormReport {
	tb.Helper()
	// The EKs, made once and cached, before anything is timed.
	if _, err := ekKeys(n); err != nil {
		tb.Fatal(err)
	}
	server, client := stormNetns(tb)
	d := startStormDaemon(tb, bin, server, assets)
	pinned(tb, d.cmd.Process.Pid, "attestationd", "0")

	resultFile := filepath.Join(tb.TempDir(), "result.json")
	spec, err := json.Marshal(stormSpec{Machines: n, PowerOnEvery: powerOnEvery, Interface: stormClientIface, URL: stormURL,
		DaemonPID: d.cmd.Process.Pid, Assets: assets.sums, Result: resultFile})
	if err != nil {
		tb.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command("ip", "netns", "exec", client, "taskset", "-c", "1", exe)
	cmd.Env = append(os.Environ(), machinesEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start the machines: %v", err)
	}
	pinned(tb, cmd.Process.Pid, filepath.Base(exe)[:min(15, len(filepath.Base(exe)))], "1")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(15 * time.Minute):
		cmd.Process.Kill()
		err = fmt.Errorf("not done after 15 minutes: %w", <-done)
	}
	if err != nil {
		tb.Fatalf("the machines: %v\n%s\ndaemon log: %s", err, out.String(), tail(d.log))
	}
	var res stormResult
	b, err := os.ReadFile(resultFile)
	if err == nil {
		err = json.Unmarshal(b, &res)
	}
	if err != nil {
		tb.Fatalf("the machines' result: %v\n%s", err, out.String())
	}

	// Unless it is to write a CPU profile, the daemon gets no chance to
	// flush anything: what it acknowledged must be in its database.
	stop := syscall.SIGKILL
	if os.Getenv(daemon.CPUProfileEnv) != "" {
		stop = syscall.SIGTERM
	}
	d.cmd.Process.Signal(stop)
	d.cmd.Wait()
	if keep := os.Getenv(stormLogEnv); keep != "" {
		if b, err := os.ReadFile(d.log); err == nil {
			os.WriteFile(keep, b, 0o644)
		}
	}
	r := checkStorm(tb, d, &res)
	r.assets, r.stop = assets.what, stop.String()
	if r.lost > 0 {
		tb.Logf("daemon log: %s", tail(d.log))
	}
	return r
}

// tail is the end of the file at path.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

// stormReport is what one storm measured.
type stormReport struct {
	machines, lost, retransmits, peak int
	assets, stop                      string
	elapsed                           time.Duration
	allAttested, allConfigured        time.Duration
	// phase holds each phase's p50 and p99; whole the whole boot's.
	phase       [phases][2]time.Duration
	whole       [2]time.Duration
	daemonCPU   time.Duration
	loadCPU     time.Duration
	daemonWrote int64
	cpuBusy     [2]float64
	leases      int
	state       map[lifecycle.State]int
	failures    []string
}

// checkStorm checks, in the database of the stopped daemon, that every
// machine that says it booted has its lease, its attestation from its
// leased address, its config fetch and their events, and sums up.
func checkStorm(tb testing.TB, d *stormDaemon, res *stormResult) *stormReport {
	tb.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(d.dataDir, daemon.DatabaseFile))
	if err != nil {
		tb.Fatalf("open the daemon's database after the storm: %v", err)
	}
	defer st.Close()
	leases, err := dhcp.SQLLeases{DB: st.DB()}.Leases(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	byMAC := map[string]dhcp.Lease{}
	for _, l := range leases {
		if l.State == dhcp.LeaseBound {
			byMAC[l.MAC] = l
		}
	}
	seen := func(t events.Type) map[string]int {
		evs, err := st.ListEvents(ctx, store.EventFilter{Type: t})
		if err != nil {
			tb.Fatal(err)
		}
		m := map[string]int{}
		for _, e := range evs {
			m[e.EKFingerprint]++
		}
		return m
	}
	online, configured := seen(events.TypeOnline), seen(events.TypeConfigured)
	r := &stormReport{machines: len(res.Machines), elapsed: res.Elapsed, peak: res.PeakBooting,
		daemonCPU: res.DaemonCPU, loadCPU: res.LoadCPU, daemonWrote: res.DaemonWrote, cpuBusy: res.CPUBusy, leases: len(byMAC)}
	if r.state, err = st.CountMachinesByState(ctx); err != nil {
		tb.Fatal(err)
	}
	var (
		per   [phases][]time.Duration
		whole []time.Duration
	)
	fail := func(m machineResult, format string, args ...any) {
		r.lost++
		if len(r.failures) < 20 {
			r.failures = append(r.failures, m.MAC+": "+fmt.Sprintf(format, args...))
		}
	}
	for _, m := range res.Machines {
		r.retransmits += m.Retransmits
		if m.Err != "" {
			fail(m, "%s", m.Err)
			continue
		}
		if l, ok := byMAC[m.MAC]; !ok || l.IP.String() != m.IP {
			fail(m, "acknowledged lease of %s not in the database (it has %v)", m.IP, l)
			continue
		}
		row, err := st.GetMachineByEK(ctx, m.Fingerprint)
		if err != nil {
			fail(m, "machine not in the database: %v", err)
			continue
		}
		switch {
		case row.State != lifecycle.Provisioned || row.AttestedAt.IsZero() || row.ConfiguredAt.IsZero():
			fail(m, "machine %s, attested at %v, configured at %v; want provisioned, both set", row.State, row.AttestedAt, row.ConfiguredAt)
			continue
		case row.IP != m.IP:
			fail(m, "machine attested from %s, its lease is %s", row.IP, m.IP)
			continue
		case online[m.Fingerprint] != 1 || configured[m.Fingerprint] != 1:
			fail(m, "%d node.online and %d node.configured events, want one each", online[m.Fingerprint], configured[m.Fingerprint])
			continue
		}
		r.allAttested = max(r.allAttested, row.AttestedAt.Sub(res.Start))
		r.allConfigured = max(r.allConfigured, row.ConfiguredAt.Sub(res.Start))
		for i, p := range m.Phases {
			per[i] = append(per[i], p)
		}
		whole = append(whole, m.Whole)
	}
	if len(whole) == 0 {
		return r
	}
	q := func(ds []time.Duration) [2]time.Duration {
		slices.Sort(ds)
		return [2]time.Duration{percentile(ds, 0.50), percentile(ds, 0.99)}
	}
	for i := range per {
		r.phase[i] = q(per[i])
	}
	r.whole = q(whole)
	return r
}

func (r *stormReport) daemonCPUPerMachine() float64 { return ms(r.daemonCPU) / float64(r.machines) }
func (r *stormReport) loadCPUPerMachine() float64   { return ms(r.loadCPU) / float64(r.machines) }

// summary is the storm in one line.
func (r *stormReport) summary() string {
	return fmt.Sprintf("%d machines, powered on %v apart: all attested %.1f s, all configured %.1f s after the first power-on, %d lost; boot p50 %.0f ms, p99 %.0f ms; daemon %.1f ms CPU/machine, %.0f%% of CPU 0 (which was %.0f%% busy, other processes included); machines %.1f ms CPU/machine, %.0f%% of CPU 1 (%.0f%% busy); %d DHCP retransmissions",
		r.machines, powerOnEvery, r.allAttested.Seconds(), r.allConfigured.Seconds(), r.lost, ms(r.whole[0]), ms(r.whole[1]),
		r.daemonCPUPerMachine(), 100*r.daemonCPU.Seconds()/r.elapsed.Seconds(), 100*r.cpuBusy[0],
		r.loadCPUPerMachine(), 100*r.loadCPU.Seconds()/r.elapsed.Seconds(), 100*r.cpuBusy[1], r.retransmits)
}

// log writes the storm in a few lines (go test cuts a benchmark's log
// after ten without -v).
func (r *stormReport) log(tb testing.TB) {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "boot storm: %s\n", r.summary())
	fmt.Fprintf(&b, "  assets: %s\n", r.assets)
	fmt.Fprintf(&b, "  storm took %.1f s (the machines' view), at most %d booting at once; daemon wrote %.1f KiB/machine to storage; stopped with %s; database: %d bound leases, machines by state %v\n",
		r.elapsed.Seconds(), r.peak, float64(r.daemonWrote)/1024/float64(r.machines), r.stop, r.leases, r.state)
	b.WriteString("  phases, p50/p99 ms:")
	for i, name := range phaseNames {
		fmt.Fprintf(&b, " %s %.0f/%.0f,", name, ms(r.phase[i][0]), ms(r.phase[i][1]))
	}
	fmt.Fprintf(&b, " whole boot %.0f/%.0f\n", ms(r.whole[0]), ms(r.whole[1]))
	for i, f := range r.failures {
		if i == 5 {
			fmt.Fprintf(&b, "  lost: %d more\n", r.lost-i)
			break
		}
		fmt.Fprintf(&b, "  lost: %s\n", f)
	}
	tb.Log(b.String())
}
