package netconf

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/attestation/attestation/internal/testenv"
)

// inNamespace is set in the child process that runs in its own network
// and mount namespaces.
const inNamespace = "NETCONF_TEST_IN_NETNS"

// TestSetupDHCP runs Setup for real: a veth pair in a fresh network
// namespace, a DHCP server on one end, Setup on the other. The test binary
// re-runs itself in the namespaces (it needs root); the host's network is
// never touched.
func TestSetupDHCP(t *testing.T) {
	if os.Getenv(inNamespace) == "" {
		testenv.Integration(t, "agent network setup over DHCP in a namespace")
		testenv.Root(t, "creating a network namespace")
		cmd := exec.Command(os.Args[0], "-test.run=^TestSetupDHCP$", "-test.v")
		cmd.Env = append(os.Environ(), inNamespace+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil && errors.Is(err, syscall.EPERM) {
			testenv.Missing(t, "cannot create namespaces here: %v", err)
		}
		t.Logf("in a network namespace:\n%s", out)
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		if !strings.Contains(string(out), "--- PASS: TestSetupDHCP") {
			t.Fatal("child did not pass")
		}
		return
	}
	setupInNamespace(t)
}

func setupInNamespace(t *testing.T) {
	// A sysfs of our own shows this namespace's interfaces; keep the mount
	// away from the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	root := t.TempDir()
	sys := filepath.Join(root, "sys")
	os.Mkdir(sys, 0o755)
	if err := unix.Mount("sysfs", sys, "sysfs", 0, ""); err != nil {
		t.Fatalf("mount sysfs: %v", err)
	}
	defer unix.Unmount(sys, unix.MNT_DETACH)

	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "srv0"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	srv, err := netlink.LinkByName("srv0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(srv, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}

	var requests atomic.Int32
	handler := func(conn net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
		var mt dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			mt = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			mt = dhcpv4.MessageTypeAck
			requests.Add(1)
		default:
			return
		}
		resp, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(mt),
			dhcpv4.WithYourIP(net.IPv4(10, 99, 0, 50)),
			dhcpv4.WithServerIP(net.IPv4(10, 99, 0, 1)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(net.IPv4(10, 99, 0, 1)),
			dhcpv4.WithDNS(net.IPv4(10, 99, 0, 53)),
			dhcpv4.WithLeaseTime(4),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 1))),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(2*time.Second)),
			dhcpv4.WithOption(dhcpv4.OptDomainName("lab.test")),
		)
		if err != nil {
			t.Errorf("DHCP reply: %v", err)
			return
		}
		conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
	}
	server, err := server4.NewServer("srv0", &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		t.Fatalf("DHCP server: %v", err)
	}
	go server.Serve()
	defer server.Close()

	// The peer comes up late, like a NIC that takes a while to get
	// carrier: Setup has to wait for it.
	go func() {
		time.Sleep(1500 * time.Millisecond)
		netlink.LinkSetUp(srv)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resolv := filepath.Join(root, "etc", "resolv.conf")
	start := time.Now()
	link, err := Setup(ctx, Options{
		Interfaces: []string{"eth0"},
		SysRoot:    root,
		ResolvConf: resolv,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("Setup took %s: it did not wait for carrier", d)
	}
	if got, want := link.Config.Address, netip.MustParsePrefix("10.99.0.50/24"); got != want {
		t.Errorf("leased %s, want %s", got, want)
	}

	eth0, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.0.50/24" {
		t.Errorf("eth0 addresses %v, want 10.99.0.50/24", addrs)
	}
	routes, err := netlink.RouteList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var gw string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			gw = r.Gw.String()
		}
	}
	if gw != "10.99.0.1" {
		t.Errorf("default route via %q, want 10.99.0.1 (routes %v)", gw, routes)
	}
	rc, err := os.ReadFile(resolv)
	if err != nil || !strings.Contains(string(rc), "nameserver 10.99.0.53\n") || !strings.Contains(string(rc), "search lab.test\n") {
		t.Errorf("resolv.conf = %q, %v", rc, err)
	}
	lo, _ := netlink.LinkByName("lo")
	if lo == nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is not up")
	}

	// T1 is 2s: Maintain renews.
	before := requests.Load()
	mctx, mcancel := context.WithTimeout(ctx, 4*time.Second)
	defer mcancel()
	link.Maintain(mctx)
	if requests.Load() == before {
		t.Error("Maintain sent no renewal in 4s with T1 = 2s")
	}
}
