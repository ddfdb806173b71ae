package daemon_test

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"

	"github.com/attestation/attestation/internal/testenv"
)

// TestDHCP starts the daemon with pxe_interface set to the loopback
// interface and asks its PXE boot-server port (4011) for a boot file: an
// unknown machine is answered (it boots the agent), with no address.
func TestDHCP(t *testing.T) {
	testenv.Integration(t, "daemon's PXE boot server on loopback")
	testenv.Root(t, "DHCP on port 67")
	daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) {
		c.PXEInterface = "lo"
	}})
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, err := dhcpv4.New(
		dhcpv4.WithHwAddr(net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 1)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
	)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for try := 0; try < 50; try++ {
		if _, err := c.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4011}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		reply, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if reply.MessageType() != dhcpv4.MessageTypeAck || reply.BootFileName != "undionly.kpxe" || !reply.YourIPAddr.IsUnspecified() {
			t.Fatalf("got %s, file %q, yiaddr %s, want an ACK with undionly.kpxe and no address", reply.MessageType(), reply.BootFileName, reply.YourIPAddr)
		}
		return
	}
	t.Fatal("no DHCP reply on 127.0.0.1:4011")
}
