package daemon

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/dhcp"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/store"
)

// dhcpServer builds the DHCP server when pxe_interface is set (nil when it
// is not); it answers as the boot decision says for the stored machine.
func dhcpServer(cfg config.Config, st *store.Store, publicURL string, log *slog.Logger, reg prometheus.Registerer) (*dhcp.Server, error) {
	if cfg.PXEInterface == "" {
		return nil, nil
	}
	return dhcp.New(dhcp.Options{
		Interface:  cfg.PXEInterface,
		Mode:       dhcp.Mode(cfg.DHCPMode),
		PublicURL:  publicURL,
		Decider:    dhcp.FromBoot(&boot.Resolver{Store: st, Policy: boot.Policy{PublicURL: publicURL}}),
		Logger:     log.With("component", "dhcp"),
		Registerer: reg,
	})
}
