package daemon

import (
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/dhcp"
	"github.com/attestation/attestation/boot/ndp"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/store"
)

// dhcpServer builds the DHCP server when pxe_interface is set (nil when it
// is not); it answers as the boot decision says for the stored machine,
// and in full mode keeps its leases in the database. With ra (the router
// advertisements, nil when off), it has ra expect the router
// solicitations of the iPXE clients it answers.
func dhcpServer(cfg config.Config, st *store.Store, resolver *boot.Resolver, publicURL string, ra *ndp.Responder, log *slog.Logger, reg prometheus.Registerer) (*dhcp.Server, error) {
	if cfg.PXEInterface == "" {
		return nil, nil
	}
	opts := dhcp.Options{
		Interface:  cfg.PXEInterface,
		Mode:       dhcp.Mode(cfg.DHCPMode),
		PublicURL:  publicURL,
		Decider:    dhcp.FromBoot(resolver),
		Logger:     log.With("component", "dhcp"),
		Registerer: reg,
	}
	if ra != nil {
		opts.Answered = func(c dhcp.Client) {
			if c.IPXE {
				ra.Expect(c.MAC)
			}
		}
	}
	if cfg.DHCPMode == config.DHCPModeFull {
		first, last, err := cfg.DHCPPool()
		if err != nil {
			return nil, err
		}
		p := &dhcp.Pool{Start: first, End: last, MaxUnknown: cfg.DHCPMaxUnknown, Reservations: map[string]net.IP{}}
		if cfg.DHCPRouter != "" {
			p.Router = net.ParseIP(cfg.DHCPRouter)
		}
		for _, d := range cfg.DHCPDNS {
			p.DNS = append(p.DNS, net.ParseIP(d))
		}
		for mac, ip := range cfg.DHCPReservations {
			hw, _ := net.ParseMAC(mac) // validated with the config
			p.Reservations[hw.String()] = net.ParseIP(ip)
		}
		opts.Pool, opts.Leases = p, dhcp.SQLLeases{DB: st.DB()}
	}
	return dhcp.New(opts)
}

// routerAdvertisements builds the responder to the IPv6 router
// solicitations of iPXE clients on pxe_interface, when it is set and
// pxe_router_advertisements is on (nil otherwise).
func routerAdvertisements(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (*ndp.Responder, error) {
	if cfg.PXEInterface == "" || !cfg.PXERouterAdvertisements {
		return nil, nil
	}
	return ndp.New(ndp.Options{Interface: cfg.PXEInterface, Logger: log.With("component", "ndp"), Registerer: reg})
}
