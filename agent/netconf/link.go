package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// Options tune Setup. The zero value is what /init uses.
type Options struct {
	// Interfaces are the candidates, in order of preference.
	Interfaces []string
	// SysRoot is prefixed to /sys/class/net (default "/").
	SysRoot string
	// Carrier is how long to wait for any candidate to get carrier
	// (default 10 s: e1000 takes about 2.5 s after link up).
	Carrier time.Duration
	// ResolvConf is the file to write DNS servers to (default
	// /etc/resolv.conf).
	ResolvConf string
	Logger     *slog.Logger
}

// Link is a configured interface holding its DHCP lease.
type Link struct {
	Config Config
	client *nclient4.Client
	lease  *nclient4.Lease
	opts   Options
}

// Setup brings up every candidate link (and lo), waits for carrier, and
// runs DHCP on the links that have one, in order, until one gets a lease,
// which it applies. Call Link.Maintain to keep the lease.
func Setup(ctx context.Context, o Options) (*Link, error) {
	if o.SysRoot == "" {
		o.SysRoot = "/"
	}
	if o.Carrier == 0 {
		o.Carrier = 10 * time.Second
	}
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Interfaces) == 0 {
		return nil, errors.New("network: no network interface (is the NIC driver loaded?)")
	}
	if err := up("lo"); err != nil {
		o.Logger.Warn("loopback not up", "err", err)
	}
	for _, name := range o.Interfaces {
		if err := up(name); err != nil {
			o.Logger.Warn("link not up", "link", name, "err", err)
		}
	}
	ready := WaitCarrier(ctx, o.SysRoot, o.Interfaces, o.Carrier)
	if len(ready) == 0 {
		return nil, fmt.Errorf("network: no carrier on %s after %s (cable, switch port?)", strings.Join(o.Interfaces, ", "), o.Carrier)
	}
	o.Logger.Info("carrier", "links", strings.Join(ready, ","))
	var errs []error
	for _, name := range ready {
		l, err := dhcp(ctx, name, o)
		if err == nil {
			return l, nil
		}
		o.Logger.Warn("no DHCP lease", "link", name, "err", err)
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func dhcp(ctx context.Context, name string, o Options) (*Link, error) {
	client, err := nclient4.New(name, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("DHCP on %s: %w", name, err)
	}
	lease, err := client.Request(ctx, requestOptions())
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("DHCP on %s: %w", name, err)
	}
	c, err := FromACK(name, lease.ACK)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("DHCP on %s: %w", name, err)
	}
	if err := Apply(c, o.ResolvConf); err != nil {
		client.Close()
		return nil, err
	}
	o.Logger.Info("dhcp lease", "link", name, "address", c.Address, "gateway", c.Gateway(),
		"dns", fmt.Sprint(c.DNS), "server", c.Server, "lease", c.Lease)
	return &Link{Config: c, client: client, lease: lease, opts: o}, nil
}

// Maintain renews the lease at T1 until ctx is done. A renewal that fails
// is retried at half the time left; the address stays configured either
// way, since losing it would cut the agent off for good.
func (l *Link) Maintain(ctx context.Context) {
	defer l.client.Close()
	log := l.opts.Logger
	wait := l.Config.Renew
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		lease, err := l.client.Renew(ctx, l.lease, requestOptions())
		if err != nil {
			wait = max(time.Until(l.lease.CreationTime.Add(l.Config.Lease))/2, 10*time.Second)
			log.Warn("dhcp renew failed", "link", l.Config.Interface, "err", err, "retry_in", wait.Round(time.Second))
			continue
		}
		c, err := FromACK(l.Config.Interface, lease.ACK)
		if err == nil && c.Address != l.Config.Address {
			err = Apply(c, l.opts.ResolvConf)
		}
		if err != nil {
			log.Warn("dhcp renew not applied", "link", l.Config.Interface, "err", err)
		} else {
			l.Config = c
		}
		l.lease = lease
		wait = max(c.Renew, 10*time.Second)
		log.Info("dhcp renewed", "link", l.Config.Interface, "address", l.Config.Address, "lease", c.Lease)
	}
}

// requestOptions asks for what FromACK uses.
func requestOptions() dhcpv4.Modifier {
	return dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionDNSDomainSearchList,
		dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionInterfaceMTU)
}

// WaitCarrier polls names until at least one has carrier or timeout passes,
// then returns those with carrier, in the order of names.
func WaitCarrier(ctx context.Context, sysRoot string, names []string, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		var ready []string
		for _, n := range names {
			if HasCarrier(sysRoot, n) {
				ready = append(ready, n)
			}
		}
		if len(ready) > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return ready
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// HasCarrier reads /sys/class/net/NAME/carrier (unreadable while down).
func HasCarrier(sysRoot, name string) bool {
	b, err := os.ReadFile(filepath.Join(sysRoot, "sys/class/net", name, "carrier"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Select narrows names to the one matching want, an interface name or a
// MAC address; an empty want keeps them all. macOf reads a name's MAC.
func Select(names []string, want string, macOf func(string) string) []string {
	if want == "" {
		return names
	}
	mac, macErr := net.ParseMAC(want)
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool {
		if n == want {
			return false
		}
		if macErr == nil && strings.EqualFold(macOf(n), mac.String()) {
			return false
		}
		return true
	})
}

func up(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("link %s up: %w", name, err)
	}
	return nil
}

// Apply configures c: MTU, address, routes, then resolv.conf.
func Apply(c Config, resolvConf string) error {
	l, err := netlink.LinkByName(c.Interface)
	if err != nil {
		return fmt.Errorf("configure %s: %w", c.Interface, err)
	}
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(l, c.MTU); err != nil {
			return fmt.Errorf("configure %s: MTU %d: %w", c.Interface, c.MTU, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   c.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(c.Address.Bits(), 32),
	}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("configure %s: address %s: %w", c.Interface, c.Address, err)
	}
	subnet := c.Address.Masked()
	for _, r := range c.Routes {
		route := &netlink.Route{
			LinkIndex: l.Attrs().Index,
			Dst:       &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
			Gw:        r.Via.AsSlice(),
		}
		if r.Via.IsUnspecified() {
			route.Gw = nil
			route.Scope = netlink.SCOPE_LINK
		} else if !subnet.Contains(r.Via) {
			// A router outside the subnet (common on clouds' /32 leases)
			// is reachable on the link all the same.
			route.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("configure %s: route to %s via %s: %w", c.Interface, r.Dst, r.Via, err)
		}
	}
	if rc := ResolvConf(c); rc != nil {
		if err := os.MkdirAll(filepath.Dir(resolvConf), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", resolvConf, err)
		}
		if err := os.WriteFile(resolvConf, rc, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", resolvConf, err)
		}
	}
	return nil
}
