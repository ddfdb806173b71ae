// Package hardware reads what the agent reports about the machine: the
// SMBIOS identifiers from /sys/class/dmi/id and the physical network
// interfaces from /sys/class/net. These are attributes shown to operators,
// never identity: the TPM's EK is the identity.
package hardware

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Info is what Collect found. Missing values are empty.
type Info struct {
	SMBIOSUUID string
	Serial     string
	Product    string
	// Interfaces are the physical network interfaces, sorted by name.
	Interfaces []Interface
}

// MACs returns the interfaces' MAC addresses in interface order.
func (i Info) MACs() []string {
	var macs []string
	for _, n := range i.Interfaces {
		if n.MAC != "" {
			macs = append(macs, n.MAC)
		}
	}
	return macs
}

// IPs returns the interfaces' addresses, IPv4 first (the control plane
// shows the first as the machine's address), each family in interface
// order.
func (i Info) IPs() []string {
	var v4, v6 []string
	for _, n := range i.Interfaces {
		for _, a := range n.IPs {
			if a.Is4() {
				v4 = append(v4, a.String())
			} else {
				v6 = append(v6, a.String())
			}
		}
	}
	return append(v4, v6...)
}

// Interface is one physical network interface.
type Interface struct {
	Name string
	// MAC is lower-case, colon-separated.
	MAC string
	// IPs are its global unicast addresses (no loopback, no link-local).
	IPs []netip.Addr
}

// Collector reads the hardware under Root. The zero value reads the running
// system.
type Collector struct {
	// Root is prefixed to /sys (default "/"); tests point it at a tree.
	Root string
	// Addrs returns an interface's addresses (default: from net.Interfaces).
	Addrs func(name string) ([]netip.Addr, error)
}

// Collect reads the running system's hardware.
func Collect() Info { return Collector{}.Collect() }

// Collect reads everything it can; whatever is missing or unreadable (a
// VM without SMBIOS, product_uuid readable only by root) is left empty.
func (c Collector) Collect() Info {
	dmi := filepath.Join(c.root(), "sys/class/dmi/id")
	info := Info{
		SMBIOSUUID: strings.ToLower(readValue(filepath.Join(dmi, "product_uuid"))),
		Serial:     readValue(filepath.Join(dmi, "product_serial")),
		Product:    readValue(filepath.Join(dmi, "product_name")),
	}
	addrs := c.Addrs
	if addrs == nil {
		addrs = systemAddrs
	}
	for _, name := range c.Physical() {
		n := Interface{Name: name, MAC: readMAC(filepath.Join(c.root(), "sys/class/net", name, "address"))}
		ips, _ := addrs(name) // an interface without addresses is still reported
		for _, ip := range ips {
			if ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() {
				n.IPs = append(n.IPs, ip.Unmap())
			}
		}
		info.Interfaces = append(info.Interfaces, n)
	}
	return info
}

// Physical lists the physical network interfaces, sorted by name: those
// backed by a device. Loopback, bridges, bonds, veths, tunnels and other
// virtual interfaces have no device link in sysfs.
func (c Collector) Physical() []string {
	dir := filepath.Join(c.root(), "sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		if name == "lo" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name, "device")); err != nil {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func (c Collector) root() string {
	if c.Root == "" {
		return "/"
	}
	return c.Root
}

// readValue returns a sysfs attribute without its trailing newline, or ""
// when it is missing or unreadable.
func readValue(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readMAC returns the interface's hardware address, or "" when it has none
// worth reporting (all zeros, unreadable).
func readMAC(path string) string {
	hw, err := net.ParseMAC(readValue(path))
	if err != nil {
		return ""
	}
	if !slices.ContainsFunc(hw, func(b byte) bool { return b != 0 }) {
		return ""
	}
	return strings.ToLower(hw.String())
}

func systemAddrs(name string) ([]netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	as, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, a := range as {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok {
				ips = append(ips, ip.Unmap())
			}
		}
	}
	return ips, nil
}
