// Package netconf gives the initramfs agent an IPv4 address: it brings the
// links up, waits for carrier, runs DHCP itself (the kernel's IP_PNP is
// off) on the first link that has one, and applies the lease: address,
// routes, MTU and resolv.conf. FromACK and ResolvConf are pure; the system
// calls are in link.go.
package netconf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Config is a DHCP lease turned into what to configure.
type Config struct {
	Interface string
	// Address is the leased address with its subnet's prefix length.
	Address netip.Prefix
	// Routes include the default route (Dst 0.0.0.0/0) when there is one.
	Routes []Route
	DNS    []netip.Addr
	// Search is the DNS search list (domain name, then domain search).
	Search []string
	MTU    int
	Server netip.Addr
	Lease  time.Duration
	// Renew is when to renew, counted from the lease (T1).
	Renew time.Duration
}

// Route is one IPv4 route.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// Gateway returns the default route's router, if any.
func (c Config) Gateway() netip.Addr {
	for _, r := range c.Routes {
		if r.Dst.Bits() == 0 {
			return r.Via
		}
	}
	return netip.Addr{}
}

// defaultLease is assumed when the server names no lease time.
const defaultLease = time.Hour

// FromACK turns a DHCPACK into a Config.
func FromACK(iface string, ack *dhcpv4.DHCPv4) (Config, error) {
	if ack == nil {
		return Config{}, errors.New("DHCP lease: no ACK")
	}
	if t := ack.MessageType(); t != dhcpv4.MessageTypeAck {
		return Config{}, fmt.Errorf("DHCP lease: message is a %s, not an ACK", t)
	}
	ip, ok := addr4(ack.YourIPAddr)
	if !ok || ip.IsUnspecified() {
		return Config{}, fmt.Errorf("DHCP lease: no address offered (yiaddr %v)", ack.YourIPAddr)
	}
	c := Config{Interface: iface}
	bits := defaultBits(ip)
	if m := ack.SubnetMask(); m != nil {
		ones, size := m.Size()
		if size != 32 || ones == 0 {
			return Config{}, fmt.Errorf("DHCP lease: bad subnet mask %v", m)
		}
		bits = ones
	}
	c.Address = netip.PrefixFrom(ip, bits)

	// RFC 3442: with classless static routes the client ignores the router
	// option.
	if routes := ack.ClasslessStaticRoute(); len(routes) > 0 {
		for _, r := range routes {
			dst, ok1 := addr4(r.Dest.IP)
			via, ok2 := addr4(r.Router)
			ones, _ := r.Dest.Mask.Size()
			if !ok1 || !ok2 {
				continue
			}
			c.Routes = append(c.Routes, Route{Dst: netip.PrefixFrom(dst, ones).Masked(), Via: via})
		}
	} else {
		for _, r := range ack.Router() {
			if via, ok := addr4(r); ok && !via.IsUnspecified() {
				c.Routes = append(c.Routes, Route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Via: via})
				break // one default route
			}
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := addr4(d); ok && !a.IsUnspecified() {
			c.DNS = append(c.DNS, a)
		}
	}
	if d := strings.TrimSuffix(ack.DomainName(), "."); d != "" {
		c.Search = append(c.Search, d)
	}
	if l := ack.DomainSearch(); l != nil {
		for _, d := range l.Labels {
			if d = strings.TrimSuffix(d, "."); d != "" && !slices.Contains(c.Search, d) {
				c.Search = append(c.Search, d)
			}
		}
	}
	if b := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(b) == 2 {
		// Below 576 is not allowed for IPv4 (RFC 2132 9.1).
		if mtu := int(binary.BigEndian.Uint16(b)); mtu >= 576 {
			c.MTU = mtu
		}
	}
	c.Server, _ = addr4(ack.ServerIdentifier())
	c.Lease = ack.IPAddressLeaseTime(defaultLease)
	c.Renew = ack.IPAddressRenewalTime(c.Lease / 2)
	if c.Renew <= 0 || c.Renew > c.Lease {
		c.Renew = c.Lease / 2
	}
	return c, nil
}

// ResolvConf renders /etc/resolv.conf for c, or nil when it has no DNS
// servers.
func ResolvConf(c Config) []byte {
	if len(c.DNS) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# from DHCP on %s\n", c.Interface)
	for _, d := range c.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if len(c.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Search, " "))
	}
	return []byte(b.String())
}

func addr4(ip net.IP) (netip.Addr, bool) {
	v4 := ip.To4()
	if v4 == nil {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v4)), true
}

// defaultBits is the classful prefix length, for a server that sends no
// subnet mask.
func defaultBits(ip netip.Addr) int {
	switch b := ip.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	default:
		return 24
	}
}
