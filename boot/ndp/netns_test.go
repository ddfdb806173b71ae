package ndp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/attestation/attestation/internal/testenv"
)

// The namespace test runs this binary again in each namespace: as the
// responder in the server's, as a soliciting client in the client's.
const (
	serveEnv     = "NDP_TEST_SERVE"     // interface to answer on
	expectEnv    = "NDP_TEST_EXPECT"    // MAC the responder expects
	solicitEnv   = "NDP_TEST_SOLICIT"   // interface to solicit on
	macEnv       = "NDP_TEST_MAC"       // MAC the solicitation names
	advertiseEnv = "NDP_TEST_ADVERTISE" // the client advertises as a router first
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(serveEnv) != "":
		os.Exit(serveHelper(os.Getenv(serveEnv)))
	case os.Getenv(solicitEnv) != "":
		os.Exit(solicitHelper(os.Getenv(solicitEnv)))
	}
	os.Exit(m.Run())
}

func serveHelper(iface string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	r, err := New(Options{Interface: iface, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mac, err := net.ParseMAC(os.Getenv(expectEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r.Expect(mac)
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// solicitHelper sends a router solicitation naming NDP_TEST_MAC on iface
// (after a router advertisement of its own with NDP_TEST_ADVERTISE) and
// prints the first advertisement it receives within 2 s: "advertisement
// from ADDR hoplimit N: BYTES", or "none".
func solicitHelper(iface string) int {
	fail := func(err error) int { fmt.Println("error:", err); return 1 }
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fail(err)
	}
	mac, err := net.ParseMAC(os.Getenv(macEnv))
	if err != nil {
		return fail(err)
	}
	c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return fail(err)
	}
	p := ipv6.NewPacketConn(c)
	defer p.Close()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	for _, err := range []error{p.SetICMPFilter(&f), p.SetControlMessage(ipv6.FlagHopLimit, true),
		p.SetMulticastHopLimit(255), p.SetMulticastInterface(ifi), p.SetMulticastLoopback(false)} {
		if err != nil {
			return fail(err)
		}
	}
	if os.Getenv(advertiseEnv) != "" {
		// A router's periodic advertisement: lifetime 1800 s.
		ra := advertisement(ifi.HardwareAddr)
		ra[6], ra[7] = 0x07, 0x08
		if _, err := p.WriteTo(ra, nil, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: iface}); err != nil {
			return fail(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := p.WriteTo(routerSolicitation(mac), nil, &net.IPAddr{IP: allRouters, Zone: iface}); err != nil {
		return fail(err)
	}
	p.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	n, cm, src, err := p.ReadFrom(buf)
	if err != nil {
		fmt.Println("none")
		return 0
	}
	hop := -1
	if cm != nil {
		hop = cm.HopLimit
	}
	fmt.Printf("advertisement from %s hoplimit %d: % x\n", src, hop, buf[:n])
	return 0
}

func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestNetns runs the responder in one namespace and a client in another,
// joined by a veth pair: the expected machine's solicitation gets an
// advertisement that configures nothing, unicast to its link-local
// address with hop limit 255; another machine's gets none; and once
// another router advertises on the link, none gets one.
func TestNetns(t *testing.T) {
	testenv.Integration(t, "IPv6 router advertisements for iPXE across a veth pair")
	testenv.Root(t, "creating network namespaces")
	testenv.LookPath(t, "ip", "iproute2")
	id := fmt.Sprint(os.Getpid())
	server, client := "ndps"+id, "ndpc"+id
	ip(t, "netns", "add", server)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", server).Run() })
	ip(t, "netns", "add", client)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", client).Run() })
	ip(t, "-n", server, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", client)
	ip(t, "-n", server, "link", "set", "vs", "up")
	ip(t, "-n", client, "link", "set", "vc", "up")
	// Both link-local addresses usable (duplicate address detection
	// done), or neither end can send.
	deadline := time.Now().Add(10 * time.Second)
	for _, ns := range []string{server, client} {
		for {
			out := ip(t, "-n", ns, "-6", "addr", "show", "scope", "link")
			if strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no usable link-local address in %s:\n%s", ns, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	macOf := func(ns, link string) string {
		f := strings.Fields(ip(t, "-n", ns, "-o", "link", "show", link))
		for i, w := range f {
			if w == "link/ether" && i+1 < len(f) {
				return f[i+1]
			}
		}
		t.Fatalf("no MAC of %s in %s", link, ns)
		return ""
	}
	clientMAC, serverMAC := macOf(client, "vc"), macOf(server, "vs")

	// The responder's log, in a file the test reads as it grows.
	logFile, err := os.Create(filepath.Join(t.TempDir(), "responder.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logs := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	cmd := exec.Command("ip", "netns", "exec", server, os.Args[0])
	cmd.Env = append(os.Environ(), serveEnv+"=vs", expectEnv+"="+clientMAC)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		t.Logf("responder log:\n%s", logs())
	})
	for !strings.Contains(logs(), "ndp answering router solicitations") {
		if time.Now().After(deadline) {
			t.Fatalf("the responder did not start:\n%s", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}

	solicit := func(mac string, advertise bool) string {
		t.Helper()
		c := exec.Command("ip", "netns", "exec", client, os.Args[0])
		c.Env = append(os.Environ(), solicitEnv+"=vc", macEnv+"="+mac)
		if advertise {
			c.Env = append(c.Env, advertiseEnv+"=1")
		}
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	hw, _ := net.ParseMAC(serverMAC)
	ra := advertisement(hw)
	ra[2], ra[3] = 0, 0 // the checksum, not compared
	got := solicit(clientMAC, false)
	from, hop, body, ok := parseAdvertisementLine(got)
	if !ok || !strings.HasPrefix(from, "fe80::") || hop != 255 {
		t.Fatalf("the expected machine got %q; want an advertisement from the server's link-local address with hop limit 255", got)
	}
	if len(body) > 3 {
		body[2], body[3] = 0, 0
	}
	if !bytes.Equal(body, ra) {
		t.Errorf("advertisement % x, want % x (checksum aside)", body, ra)
	}
	if !strings.Contains(logs(), `msg="ndp router advertisement" mac=`+clientMAC+" to=fe80::") {
		t.Errorf("the responder logged no advertisement to %s", clientMAC)
	}

	if got := solicit("02:00:00:00:00:99", false); got != "none" {
		t.Errorf("a machine DHCP did not answer got %q, want none", got)
	}
	if got := solicit(clientMAC, true); got != "none" {
		t.Errorf("after another router advertised, the expected machine got %q, want none", got)
	}
	if !strings.Contains(logs(), "another router advertises on the link") {
		t.Errorf("the responder did not notice the other router:\n%s", logs())
	}
	if n := strings.Count(logs(), `msg="ndp router advertisement"`); n != 1 {
		t.Errorf("%d advertisements sent, want 1 (the expected machine's, before the router)", n)
	}
}

// parseAdvertisementLine reads solicitHelper's output.
func parseAdvertisementLine(s string) (from string, hop int, body []byte, ok bool) {
	head, hex, found := strings.Cut(s, ": ")
	if !found {
		return "", 0, nil, false
	}
	if _, err := fmt.Sscanf(head, "advertisement from %s hoplimit %d", &from, &hop); err != nil {
		return "", 0, nil, false
	}
	for _, h := range strings.Fields(hex) {
		var b byte
		if _, err := fmt.Sscanf(h, "%02x", &b); err != nil {
			return "", 0, nil, false
		}
		body = append(body, b)
	}
	return from, hop, body, true
}
