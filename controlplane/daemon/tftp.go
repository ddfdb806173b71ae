package daemon

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/boot/tftp"
	"github.com/attestation/attestation/controlplane/config"
)

// tftpServer builds the TFTP server when tftp_listen is set (nil when it
// is not), creating the boot assets directory on first start.
func tftpServer(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (*tftp.Server, error) {
	if cfg.TFTPListen == "" {
		return nil, nil
	}
	assets := cfg.BootAssetsDir()
	if err := os.MkdirAll(assets, 0o755); err != nil {
		return nil, fmt.Errorf("create boot assets directory: %w", err)
	}
	if _, err := os.Stat(cfg.IPXEDir); err != nil {
		log.Warn("iPXE directory missing: only files in the boot assets directory are served over TFTP (Debian package ipxe)", "ipxe_dir", cfg.IPXEDir)
	}
	return tftp.New(tftp.Options{
		Addr:       cfg.TFTPListen,
		Root:       assets,
		IPXEDir:    cfg.IPXEDir,
		Logger:     log.With("component", "tftp"),
		Registerer: reg,
	})
}
