package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/httpboot"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/store"
)

// bootResolver is the boot decision over the store, the same for DHCP,
// TFTP and HTTP boot.
func bootResolver(cfg config.Config, st *store.Store, publicURL string) *boot.Resolver {
	return &boot.Resolver{Store: st, Policy: boot.Policy{
		PublicURL:  publicURL,
		KernelArgs: strings.Fields(cfg.BootKernelArgs),
	}}
}

// httpBoot builds the HTTP boot routes (always on: they cost nothing
// until a machine boots), creating the boot assets directory on first
// start.
func httpBoot(cfg config.Config, resolver *boot.Resolver, log *slog.Logger, reg prometheus.Registerer) (*httpboot.Server, error) {
	assets := cfg.BootAssetsDir()
	if err := os.MkdirAll(assets, 0o755); err != nil {
		return nil, fmt.Errorf("create boot assets directory: %w", err)
	}
	ipxeDir := cfg.IPXEDir
	if _, err := os.Stat(ipxeDir); err != nil {
		ipxeDir = ""
	}
	return httpboot.New(httpboot.Options{
		Resolver:   resolver,
		AssetsDir:  assets,
		IPXEDir:    ipxeDir,
		Logger:     log.With("component", "boot"),
		Registerer: reg,
	})
}
