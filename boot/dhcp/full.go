package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// full answers as the network's DHCP server: addresses from the pool,
// and boot options for PXE clients the boot decision answers.
func (h *Handler) full(ctx context.Context, req Request, m *dhcpv4.DHCPv4, serverIP net.IP) (Reply, error) {
	mac := m.ClientHWAddr.String()
	c, err := h.client(m)
	pxe := err == nil
	switch {
	case pxe:
	case errors.Is(err, ErrNotPXE):
		c = Client{MAC: m.ClientHWAddr}
	default:
		return Reply{}, err
	}
	var file string
	if pxe {
		// A machine the boot decision refuses gets nothing, not even an
		// address: it must not boot from the network.
		if file, err = h.decide(ctx, c); err != nil {
			return Reply{}, err
		}
	}
	reply := func(typ dhcpv4.MessageType, yiaddr net.IP, lease time.Duration) (*dhcpv4.DHCPv4, error) {
		r, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
		)
		if err != nil {
			return nil, fmt.Errorf("build reply: %w", err)
		}
		if typ == dhcpv4.MessageTypeNak {
			return r, nil
		}
		r.YourIPAddr = yiaddr
		p := h.leases.pool
		r.UpdateOption(dhcpv4.OptSubnetMask(p.Subnet.Mask))
		if p.Router != nil {
			r.UpdateOption(dhcpv4.OptRouter(p.Router))
		}
		if len(p.DNS) > 0 {
			r.UpdateOption(dhcpv4.OptDNS(p.DNS...))
		}
		if lease > 0 {
			r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lease))
		}
		if pxe {
			r.ServerIPAddr = serverIP
			if id := m.GetOneOption(dhcpv4.OptionClientMachineIdentifier); id != nil {
				r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, id))
			}
			setBoot(r, c, file)
		}
		return r, nil
	}

	switch mt := m.MessageType(); mt {
	case dhcpv4.MessageTypeDiscover:
		ip, err := h.leases.offer(mac, m.RequestedIPAddress())
		if err != nil {
			return Reply{}, fmt.Errorf("%w: %s: %v", ErrNoAddress, mac, err)
		}
		r, err := reply(dhcpv4.MessageTypeOffer, ip, h.leases.leaseTime(mac))
		if err != nil {
			return Reply{}, err
		}
		return Reply{Packet: r, Dst: destination(req, m), Client: c, Kind: "offer"}, nil

	case dhcpv4.MessageTypeRequest:
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(serverIP) {
			h.leases.forget(mac)
			return Reply{}, ErrNotForUs
		}
		ip := m.RequestedIPAddress()
		if ip == nil || ip.IsUnspecified() {
			ip = m.ClientIPAddr
		}
		if ip == nil || ip.To4() == nil || ip.IsUnspecified() {
			return Reply{}, fmt.Errorf("%w: REQUEST without an address", ErrMalformed)
		}
		d, err := h.leases.bind(ctx, mac, ip)
		if errors.Is(err, ErrLeaseStore) {
			return Reply{}, err
		}
		if err != nil {
			r, berr := reply(dhcpv4.MessageTypeNak, nil, 0)
			if berr != nil {
				return Reply{}, berr
			}
			r.UpdateOption(dhcpv4.OptMessage(err.Error()))
			return Reply{Packet: r, Dst: nakDestination(m), Client: c, Kind: "nak"}, nil
		}
		r, err := reply(dhcpv4.MessageTypeAck, ip.To4(), d)
		if err != nil {
			return Reply{}, err
		}
		return Reply{Packet: r, Dst: destination(req, m), Client: c, Kind: "ack"}, nil

	case dhcpv4.MessageTypeDecline:
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(serverIP) {
			return Reply{}, ErrNotForUs
		}
		if err := h.leases.decline(ctx, mac, m.RequestedIPAddress()); err != nil {
			return Reply{}, err
		}
		return Reply{}, fmt.Errorf("%w: DECLINE recorded", ErrIgnoredType)

	case dhcpv4.MessageTypeRelease:
		if err := h.leases.release(ctx, mac, m.ClientIPAddr); err != nil {
			return Reply{}, err
		}
		return Reply{}, fmt.Errorf("%w: RELEASE recorded", ErrIgnoredType)

	case dhcpv4.MessageTypeInform:
		// The client has its address: options only (RFC 2131 3.4).
		r, err := reply(dhcpv4.MessageTypeAck, net.IPv4zero, 0)
		if err != nil {
			return Reply{}, err
		}
		return Reply{Packet: r, Dst: destination(req, m), Client: c, Kind: "ack"}, nil

	default:
		return Reply{}, fmt.Errorf("%w: %s", ErrIgnoredType, mt)
	}
}

// nakDestination: a NAK goes to the relay, else is broadcast (RFC 2131
// 4.1: the client may not have the address it asked for).
func nakDestination(m *dhcpv4.DHCPv4) *net.UDPAddr {
	if gi := m.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: ServerPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}
}
