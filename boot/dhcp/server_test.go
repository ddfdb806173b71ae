package dhcp

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestQueueDropsOldest(t *testing.T) {
	dropped := 0
	q := newQueue[int](3, func() { dropped++ })
	for i := range 10 {
		q.push(i)
	}
	if dropped != 7 {
		t.Errorf("got %d dropped, want 7", dropped)
	}
	for _, want := range []int{7, 8, 9} {
		if got := <-q.ch; got != want {
			t.Errorf("got %d, want %d (the newest kept in order)", got, want)
		}
	}
}

// TestServerLoopback runs the server on the loopback interface's boot
// server port: a request gets its ack back at its source address, a
// malformed one is counted, and Run returns nil when ctx ends.
func TestServerLoopback(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(Options{Interface: "lo", PublicURL: testPublicURL, Ports: []int{BootServerPort}, Registerer: reg, Workers: 2, Queue: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: BootServerPort}
	req := packet(t, dhcpv4.MessageTypeRequest, with(pxe(iana.EFI_X86_64), dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 1)))...)
	var reply *dhcpv4.DHCPv4
	buf := make([]byte, 1500)
	for try := 0; try < 50 && reply == nil; try++ { // the server may not listen yet
		if _, err := c.WriteToUDP([]byte("garbage"), srv); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(req, srv); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		if reply, err = dhcpv4.FromBytes(buf[:n]); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
	}
	if reply == nil {
		t.Fatal("no reply from the server on 127.0.0.1:4011")
	}
	if reply.MessageType() != dhcpv4.MessageTypeAck || reply.BootFileName != "snponly.efi" {
		t.Errorf("got %s with file %q, want ACK with snponly.efi", reply.MessageType(), reply.BootFileName)
	}
	if !reply.ServerIdentifier().Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("got server identifier %s, want the interface's 127.0.0.1", reply.ServerIdentifier())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if got := testutil.ToFloat64(s.m.malformed); got < 1 {
		t.Errorf("got %v malformed packets counted, want >= 1", got)
	}
	if got := testutil.ToFloat64(s.m.replies.WithLabelValues("ack", "x86-64-efi")); got < 1 {
		t.Errorf("got %v acks counted, want >= 1", got)
	}
}

func TestNewRejects(t *testing.T) {
	for name, o := range map[string]Options{
		"no interface":  {},
		"bad mode":      {Interface: "lo", Mode: "relay"},
		"full, no pool": {Interface: "lo", Mode: ModeFull},
		"bad table":     {Interface: "lo", Arch: ArchTable{0: {Name: "bios"}}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}
