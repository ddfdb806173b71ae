package bench

// The machines of the boot storm: the load generator, run as a child
// process in the machines' network namespace. Each simulated machine does
// what a network-booting server does, in order, with nothing skipped:
//
//   - its PXE firmware's DHCP (DISCOVER, OFFER, REQUEST, ACK: an address
//     and the iPXE binary to fetch),
//   - the TFTP fetch of that binary (undionly.kpxe for BIOS, snponly.efi
//     for UEFI, alternately; blksize 1468, tsize, lockstep as PXE ROMs),
//   - iPXE's DHCP (user class iPXE: the script URL),
//   - the HTTP fetches of the script, the kernel and the initramfs it
//     names (one keep-alive connection, as iPXE),
//   - the agent's DHCP once the kernel runs (no PXE class),
//   - the agent's enrollment (enroll: Register, ActivateCredential and
//     Quote with its software TPM, Attest, WatchApproval, the config GET).
//
// Its DHCP goes out of one UDP socket on the namespace's end of the veth
// (SO_BINDTODEVICE, port 68, broadcast to 255.255.255.255): every message
// carries the machine's own MAC (chaddr) and transaction ID, and full mode
// answers by broadcast as it does any client without an address. The
// source is the namespace's own address where a PXE ROM's would be
// 0.0.0.0; the server does not look at it. Once leased, the machine's
// address is added to the veth (/32), and its TFTP, HTTP and API traffic
// leaves from it, so the daemon sees a thousand sources as it would on a
// real network, and its per-source limits stay at their defaults.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// machinesEnv, when set, makes the test binary the storm's machines
// (TestMain): its value is the stormSpec as JSON.
const machinesEnv = "ATTESTATION_BOOTSTORM_MACHINES"

// stormSpec is what the machines' process is told.
type stormSpec struct {
	Machines int
	// PowerOnEvery is the time between two machines' power-on.
	PowerOnEvery time.Duration
	// Interface is the machines' end of the veth; URL the daemon's.
	Interface string
	URL       string
	// DaemonPID is the daemon's process, whose CPU time is sampled
	// around the storm.
	DaemonPID int
	// Assets are the files the machines fetch, by name, as they must
	// arrive.
	Assets map[string]assetSum
	// Result is the file the stormResult is written to.
	Result string
}

// assetSum identifies a file's content.
type assetSum struct {
	Size  int64
	CRC32 uint32 // Castagnoli
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// The phases of one machine's boot, in order.
const (
	phaseDHCPPXE = iota
	phaseTFTP
	phaseDHCPIPXE
	phaseScript
	phaseKernel
	phaseInitrd
	phaseDHCPAgent
	phaseRegister
	phaseAttest
	phaseWatch
	phaseConfig
	phases
)

var phaseNames = [phases]string{"dhcp-pxe", "tftp", "dhcp-ipxe", "script", "kernel", "initrd", "dhcp-agent", "register", "attest", "watch", "config"}

// machineResult is one machine's boot.
type machineResult struct {
	MAC, IP     string
	Fingerprint string // the EK's
	// PowerOn is when the machine started, from the storm's start;
	// Whole how long it took from there to its config in hand.
	PowerOn, Whole time.Duration
	Phases         [phases]time.Duration
	// Retransmits counts the DHCP messages sent again for want of an
	// answer in time.
	Retransmits int
	Err         string `json:",omitempty"`
}

// stormResult is what the machines' process reports.
type stormResult struct {
	Start    time.Time // the first power-on
	Elapsed  time.Duration
	Machines []machineResult
	// DaemonCPU and LoadCPU are the CPU time of the daemon and of this
	// process over the storm, DaemonWrote the bytes the daemon had
	// written to storage (its database and WAL, its log).
	DaemonCPU, LoadCPU time.Duration
	DaemonWrote        int64
	// PeakBooting is the most machines booting at once.
	PeakBooting int
	// CPUBusy is how busy CPU 0 and CPU 1 were over the storm (0 to 1),
	// with whatever else the machine ran.
	CPUBusy [2]float64
}

// runMachines is the machines' process: it runs the storm spec
// describes and writes the result; it returns the exit code.
func runMachines(spec string) int {
	var s stormSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", machinesEnv, err)
		return 2
	}
	// The load's garbage is per request, as in the enrollment storm.
	debug.SetGCPercent(400)
	res, err := bootMachines(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "boot storm machines: %v\n", err)
		return 1
	}
	b, err := json.Marshal(res)
	if err == nil {
		err = os.WriteFile(s.Result, b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "boot storm machines: write the result: %v\n", err)
		return 1
	}
	return 0
}

// simMachine is one simulated machine.
type simMachine struct {
	mac  net.HardwareAddr
	uuid uuid.UUID
	uefi bool // x86-64 UEFI (snponly.efi), else BIOS (undionly.kpxe)
	tpm  *softTPM
}

func bootMachines(s stormSpec) (*stormResult, error) {
	keys, err := ekKeys(s.Machines)
	if err != nil {
		return nil, err
	}
	ms := make([]*simMachine, s.Machines)
	for i, k := range keys {
		tpm, err := newSoftTPM(k)
		if err != nil {
			return nil, err
		}
		// 52:54:01 and not QEMU's 52:54:00: enroll reports
		// 52:54:00:00:00:01 for every agent.
		ms[i] = &simMachine{mac: net.HardwareAddr{0x52, 0x54, 0x01, byte(i >> 16), byte(i >> 8), byte(i)},
			uuid: uuid.New(), uefi: i%2 == 1, tpm: tpm}
	}
	link, err := netlink.LinkByName(s.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", s.Interface, err)
	}
	if err := waitReady(s.URL); err != nil {
		return nil, err
	}
	if err := preRegisterMachines(s.URL, ms); err != nil {
		return nil, err
	}
	dl, err := openDHCP(s.Interface)
	if err != nil {
		return nil, err
	}
	defer dl.close()
	res := &stormResult{Machines: make([]machineResult, len(ms))}
	cpu0, err := procCPU(s.DaemonPID)
	if err != nil {
		return nil, fmt.Errorf("the daemon's CPU time: %w", err)
	}
	wrote0, err := procIO(s.DaemonPID, "write_bytes")
	if err != nil {
		return nil, fmt.Errorf("the daemon's writes: %w", err)
	}
	load0 := processCPU()
	var stat0, stat1 [2]cpuTicks
	for i := range stat0 {
		if stat0[i], err = readCPUTicks(i); err != nil {
			return nil, err
		}
	}
	var (
		wg            sync.WaitGroup
		booting, peak atomic.Int64
		ctx, cancel   = context.WithTimeout(context.Background(), 10*time.Minute)
		start         = time.Now()
		boot          = &stormBoot{spec: s, dhcp: dl, link: link}
	)
	defer cancel()
	res.Start = start
	for i, m := range ms {
		wg.Go(func() {
			time.Sleep(time.Until(start.Add(time.Duration(i) * s.PowerOnEvery)))
			n := booting.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			r := &res.Machines[i]
			r.MAC, r.Fingerprint, r.PowerOn = m.mac.String(), m.tpm.fingerprint, time.Since(start)
			if err := boot.machine(ctx, m, r); err != nil {
				r.Err = err.Error()
			}
			r.Whole = time.Since(start) - r.PowerOn
			booting.Add(-1)
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.LoadCPU = processCPU() - load0
	for i := range stat1 {
		if stat1[i], err = readCPUTicks(i); err != nil {
			return nil, err
		}
		busy := stat1[i].busy - stat0[i].busy
		if total := busy + stat1[i].idle - stat0[i].idle + stat1[i].steal - stat0[i].steal; total > 0 {
			res.CPUBusy[i] = float64(busy) / float64(total)
		}
	}
	cpu1, err := procCPU(s.DaemonPID)
	if err != nil {
		return nil, fmt.Errorf("the daemon's CPU time: %w", err)
	}
	wrote1, err := procIO(s.DaemonPID, "write_bytes")
	if err != nil {
		return nil, fmt.Errorf("the daemon's writes: %w", err)
	}
	res.DaemonCPU, res.DaemonWrote, res.PeakBooting = cpu1-cpu0, wrote1-wrote0, int(peak.Load())
	return res, nil
}

// procIO reads a field of /proc/PID/io (write_bytes: what the process
// had written to storage).
func procIO(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+": "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/io", field, pid)
}

// waitReady waits for the daemon's /readyz.
func waitReady(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("attestationd not ready within 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// preRegisterMachines has the operator register each machine's EK and
// MAC with a role and hostname, so that it is approved on attestation and
// its DHCP and boot script requests find it by MAC.
func preRegisterMachines(url string, ms []*simMachine) error {
	client := attestationv1connect.NewMachineServiceClient(http.DefaultClient, url, (&daemonProc{}).admin()...)
	var g errgroup.Group
	g.SetLimit(16)
	for i, m := range ms {
		g.Go(func() error {
			_, err := client.RegisterMachine(context.Background(), connect.NewRequest(&attestationv1.RegisterMachineRequest{
				EkFingerprint: m.tpm.fingerprint, Macs: []string{m.mac.String()},
				Role: "worker", Hostname: fmt.Sprintf("node-%d", i),
			}))
			if err != nil {
				return fmt.Errorf("pre-register machine %d: %w", i, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// stormBoot is what every machine's boot shares.
type stormBoot struct {
	spec stormSpec
	dhcp *dhcpLink
	link netlink.Link
}

// DHCP retransmission timeouts: a PXE ROM's (PXE 2.1: 4, 8, 16, 32 s),
// iPXE's (from 1 s, doubling) and the agent's (nclient4: 4 s, 3 tries).
var (
	pxeTimeouts   = []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}
	ipxeTimeouts  = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}
	agentTimeouts = []time.Duration{4 * time.Second, 4 * time.Second, 4 * time.Second}
)

// machine boots m, recording each phase in r.
func (b *stormBoot) machine(ctx context.Context, m *simMachine, r *machineResult) error {
	arch, file, buildarch, platform := iana.INTEL_X86PC, "undionly.kpxe", "i386", "pcbios"
	if m.uefi {
		arch, file, buildarch, platform = iana.EFI_X86_64, "snponly.efi", "x86_64", "efi"
	}
	// What PXE firmware sends: class PXEClient with its architecture,
	// option 93, its UUID (97: type 0, the GUID's first three fields
	// little-endian, as SMBIOS keeps it) and its UNDI version (94).
	pxe := []dhcpv4.Modifier{
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", arch))),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, smbiosGUID(m.uuid))),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1})),
	}
	t := time.Now()
	ack, err := b.dhcp.lease(ctx, m.mac, pxe, pxeTimeouts, &r.Retransmits)
	if err != nil {
		return fmt.Errorf("PXE DHCP: %w", err)
	}
	r.Phases[phaseDHCPPXE] = time.Since(t)
	ip := ack.YourIPAddr.To4()
	r.IP = ip.String()
	if ack.BootFileName != file {
		return fmt.Errorf("PXE DHCP: boot file %q, want %q", ack.BootFileName, file)
	}
	// The firmware configures its address; an address the server handed
	// to another machine too is already there.
	if err := netlink.AddrAdd(b.link, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}); err != nil {
		return fmt.Errorf("add the leased %s: %w", ip, err)
	}

	t = time.Now()
	if err := b.tftp(ack.ServerIPAddr, ip, file); err != nil {
		return err
	}
	r.Phases[phaseTFTP] = time.Since(t)

	t = time.Now()
	ack, err = b.dhcp.lease(ctx, m.mac, append(pxe, dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))), ipxeTimeouts, &r.Retransmits)
	if err != nil {
		return fmt.Errorf("iPXE DHCP: %w", err)
	}
	r.Phases[phaseDHCPIPXE] = time.Since(t)
	if !ack.YourIPAddr.Equal(ip) {
		return fmt.Errorf("iPXE DHCP: leased %s, the firmware had %s", ack.YourIPAddr, ip)
	}
	script := ack.BootFileName
	if script == "" {
		script = ack.BootFileNameOption()
	}
	// What iPXE expands in the URL.
	script = strings.NewReplacer("${net0/mac}", m.mac.String(), "${uuid}", m.uuid.String(),
		"${buildarch}", buildarch, "${platform}", platform).Replace(script)

	// iPXE: one connection from the machine's address for the script,
	// the kernel and the initramfs.
	ipxe := machineHTTP(ip)
	defer ipxe.CloseIdleConnections()
	t = time.Now()
	body, err := get(ctx, ipxe, script, io.Discard)
	if err != nil {
		return fmt.Errorf("iPXE script: %w", err)
	}
	r.Phases[phaseScript] = time.Since(t)
	kernel, initrd := scriptFiles(body)
	for _, f := range []struct {
		url   string
		phase int
	}{{kernel, phaseKernel}, {initrd, phaseInitrd}} {
		t = time.Now()
		if err := b.fetch(ctx, ipxe, f.url); err != nil {
			return fmt.Errorf("%s: %w", phaseNames[f.phase], err)
		}
		r.Phases[f.phase] = time.Since(t)
	}
	ipxe.CloseIdleConnections()

	// The kernel runs the agent, which asks for its address again
	// (netconf, nclient4: no PXE class).
	t = time.Now()
	ack, err = b.dhcp.lease(ctx, m.mac, []dhcpv4.Modifier{dhcpv4.WithBroadcast(true)}, agentTimeouts, &r.Retransmits)
	if err != nil {
		return fmt.Errorf("agent DHCP: %w", err)
	}
	r.Phases[phaseDHCPAgent] = time.Since(t)
	if !ack.YourIPAddr.Equal(ip) {
		return fmt.Errorf("agent DHCP: leased %s, the firmware had %s", ack.YourIPAddr, ip)
	}

	agentHTTP := machineHTTP(ip)
	defer agentHTTP.CloseIdleConnections()
	var lat enrollLatency
	if err := agentClient(agentHTTP, b.spec.URL).enroll(ctx, m.tpm, &lat); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	r.Phases[phaseRegister], r.Phases[phaseAttest], r.Phases[phaseWatch], r.Phases[phaseConfig] = lat.register, lat.attest, lat.watch, lat.config
	return nil
}

// smbiosGUID is DHCP option 97 for u: type 0, then the GUID as SMBIOS
// stores it (the first three fields little-endian).
func smbiosGUID(u uuid.UUID) []byte {
	g := append([]byte{0}, u[:]...)
	g[1], g[2], g[3], g[4] = u[3], u[2], u[1], u[0]
	g[5], g[6] = u[5], u[4]
	g[7], g[8] = u[7], u[6]
	return g
}

// tftp fetches file from server as a PXE ROM does, from the machine's
// address, and checks what arrived.
func (b *stormBoot) tftp(server, local net.IP, file string) error {
	c, err := tftp.NewClient(net.JoinHostPort(server.String(), "69"))
	if err != nil {
		return fmt.Errorf("TFTP: %w", err)
	}
	if err := c.SetLocalAddr(local.String()); err != nil {
		return fmt.Errorf("TFTP: %w", err)
	}
	c.SetBlockSize(1468)
	c.RequestTSize(true)
	c.SetTimeout(time.Second)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		return fmt.Errorf("TFTP %s: %w", file, err)
	}
	h := crc32.New(castagnoli)
	n, err := wt.WriteTo(h)
	if err != nil {
		return fmt.Errorf("TFTP %s: %w", file, err)
	}
	return b.check(file, n, h.Sum32())
}

// check compares what arrived of the file name with the file.
func (b *stormBoot) check(name string, n int64, sum uint32) error {
	want, ok := b.spec.Assets[name]
	if !ok {
		return fmt.Errorf("fetched %s, which the machines were not to fetch", name)
	}
	if n != want.Size || sum != want.CRC32 {
		return fmt.Errorf("%s: got %d bytes (CRC32C %08x), want %d (%08x)", name, n, sum, want.Size, want.CRC32)
	}
	return nil
}

// fetch GETs a boot asset and checks it.
func (b *stormBoot) fetch(ctx context.Context, c *http.Client, url string) error {
	h := &summer{crc: crc32.New(castagnoli)}
	if _, err := get(ctx, c, url, h); err != nil {
		return err
	}
	name, _, _ := strings.Cut(url, "?")
	return b.check(path.Base(name), h.n, h.crc.Sum32())
}

// summer counts and checksums what is written to it.
type summer struct {
	crc hash.Hash32
	n   int64
}

func (s *summer) Write(p []byte) (int, error) {
	s.n += int64(len(p))
	return s.crc.Write(p)
}

// machineHTTP is an HTTP client whose connections leave from ip.
func machineHTTP(ip net.IP) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableCompression: true, MaxIdleConnsPerHost: 1}}
}

// get GETs url into w and returns the first 64 KiB of the body too.
func get(ctx context.Context, c *http.Client, url string, w io.Writer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	var head bytes.Buffer
	_, err = io.Copy(w, io.TeeReader(resp.Body, &limitedBuffer{&head, 64 << 10}))
	return head.Bytes(), err
}

// limitedBuffer keeps the first n bytes written to it.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// scriptFiles returns the kernel and initrd URLs of an iPXE script.
func scriptFiles(script []byte) (kernel, initrd string) {
	for _, line := range strings.Split(string(script), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "kernel":
			kernel = f[1]
		case "initrd":
			for _, a := range f[1:] {
				if strings.HasPrefix(a, "http") {
					initrd = a
					break
				}
			}
		}
	}
	return kernel, initrd
}

var errNoReply = errors.New("no reply")

// dhcpLink is the machines' DHCP: one UDP socket on their end of the
// veth, shared by every machine; replies reach their machine by
// transaction ID.
type dhcpLink struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func openDHCP(iface string) (*dhcpLink, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: dhcpv4.ClientPort})
	if err != nil {
		return nil, fmt.Errorf("DHCP client socket on %s: %w", iface, err)
	}
	// A storm's answers come in bursts.
	conn.SetReadBuffer(4 << 20)
	l := &dhcpLink{conn: conn, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	go l.read()
	return l, nil
}

func (l *dhcpLink) close() { l.conn.Close() }

func (l *dhcpLink) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := l.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		l.mu.Lock()
		ch := l.waiting[m.TransactionID]
		l.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

// lease gets mac an address: DISCOVER, OFFER, REQUEST, ACK, with the
// options of mods; each message is sent again after each timeout in turn
// (counted in retransmits) until its answer comes.
func (l *dhcpLink) lease(ctx context.Context, mac net.HardwareAddr, mods []dhcpv4.Modifier, timeouts []time.Duration, retransmits *int) (*dhcpv4.DHCPv4, error) {
	disc, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		return nil, err
	}
	offer, err := l.exchange(ctx, disc, dhcpv4.MessageTypeOffer, timeouts, retransmits)
	if err != nil {
		return nil, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return nil, err
	}
	return l.exchange(ctx, req, dhcpv4.MessageTypeAck, timeouts, retransmits)
}

// exchange broadcasts m until its answer of type want comes.
func (l *dhcpLink) exchange(ctx context.Context, m *dhcpv4.DHCPv4, want dhcpv4.MessageType, timeouts []time.Duration, retransmits *int) (*dhcpv4.DHCPv4, error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	l.mu.Lock()
	if _, dup := l.waiting[m.TransactionID]; dup {
		l.mu.Unlock()
		return nil, fmt.Errorf("transaction ID %s in use by another machine", m.TransactionID)
	}
	l.waiting[m.TransactionID] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.waiting, m.TransactionID)
		l.mu.Unlock()
	}()
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	raw := m.ToBytes()
	for try, timeout := range timeouts {
		if try > 0 {
			*retransmits++
		}
		if _, err := l.conn.WriteTo(raw, dst); err != nil {
			return nil, fmt.Errorf("send %s: %w", m.MessageType(), err)
		}
		timer := time.NewTimer(timeout)
	wait:
		for {
			select {
			case r := <-ch:
				if !bytes.Equal(r.ClientHWAddr, m.ClientHWAddr) {
					continue
				}
				switch r.MessageType() {
				case want:
					timer.Stop()
					return r, nil
				case dhcpv4.MessageTypeNak:
					timer.Stop()
					return nil, fmt.Errorf("%s answered with NAK: %s", m.MessageType(), r.Message())
				}
			case <-timer.C:
				break wait
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err()
			}
		}
	}
	return nil, fmt.Errorf("%s: %w in %d tries", m.MessageType(), errNoReply, len(timeouts))
}
