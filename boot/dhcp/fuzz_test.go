package dhcp

import (
	"context"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzHandle feeds arbitrary datagrams to every packet path (both modes,
// both ports, with and without a boot decision): never a panic, and a
// reply always serializes and parses back.
func FuzzHandle(f *testing.F) {
	f.Add(packet(f, dhcpv4.MessageTypeDiscover, pxe(iana.INTEL_X86PC)...), uint8(0))
	f.Add(packet(f, dhcpv4.MessageTypeRequest, pxe(iana.EFI_X86_64)...), uint8(1))
	f.Add(packet(f, dhcpv4.MessageTypeDiscover, with(pxe(iana.EFI_ARM64), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))...), uint8(2))
	f.Add(packet(f, dhcpv4.MessageTypeDiscover,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016")), dhcpv4.WithRelay(net.IPv4(10, 1, 1, 1))), uint8(3))
	f.Add(packet(f, dhcpv4.MessageTypeDecline, dhcpv4.WithClientIP(net.IPv4(10, 9, 0, 9))), uint8(5))
	f.Add(packet(f, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 0, 100)))), uint8(1))
	f.Add(packet(f, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(net.IPv4(10, 9, 0, 9))), uint8(1))
	f.Add(packet(f, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(net.IPv4(10, 9, 0, 5))), uint8(1))
	f.Add([]byte{}, uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		mode := ModeProxy
		if sel&1 != 0 {
			mode = ModeFull
		}
		port := ServerPort
		if sel&2 != 0 {
			port = BootServerPort
		}
		h := &Handler{Mode: mode, PublicURL: testPublicURL, Arch: DefaultArchTable()}
		// waited counts what may wait on I/O: the server answers a
		// request on its reader only when waits says none will.
		waited := 0
		if mode == ModeFull {
			p := testPool(100, 101)
			p.Reservations = map[string]net.IP{testMAC.String(): net.IPv4(10, 9, 0, 5)}
			l, err := newLeases(context.Background(), p, &countingStore{n: &waited}, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.leases = l
		}
		if sel&4 != 0 {
			h.Decider = DeciderFunc(func(_ context.Context, c Client) (Decision, error) {
				waited++
				return Decision{Answer: c.MAC[0]&1 == 0, File: "x.efi"}, nil
			})
		}
		r, err := h.Handle(context.Background(), Request{Data: data, Port: port, ServerIP: testServerIP,
			Src: &net.UDPAddr{IP: net.IPv4(10, 9, 0, 50), Port: 68}})
		if m, perr := parse(data); perr == nil && !h.waits(m) && waited > 0 {
			t.Fatalf("%s answered on the reader waited on I/O %d times", m.MessageType(), waited)
		}
		if err != nil {
			return
		}
		if r.Dst == nil || r.Packet == nil {
			t.Fatalf("reply without packet or destination: %+v", r)
		}
		if _, err := dhcpv4.FromBytes(r.Packet.ToBytes()); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
	})
}

// countingStore is a lease store that keeps nothing and counts its
// calls.
type countingStore struct{ n *int }

func (s *countingStore) Leases(context.Context) ([]Lease, error) { return nil, nil }

func (s *countingStore) SaveLeases(context.Context, []Lease) error {
	*s.n++
	return nil
}
