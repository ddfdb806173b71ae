package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/httpboot"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/cache"
)

// bootResolver is the boot decision over the store, the same for DHCP,
// TFTP and HTTP boot: a provisioned machine whose schematic says to
// network-boot boots its image from imgs.
func bootResolver(cfg config.Config, st *store.Store, publicURL string, imgs *cache.Cache) *boot.Resolver {
	return &boot.Resolver{Store: st, Policy: boot.Policy{
		PublicURL:  publicURL,
		KernelArgs: strings.Fields(cfg.BootKernelArgs),
		Image:      imgs.Boot,
	}}
}

// images is the image cache: DATA_DIR/images, built from the boot assets,
// recording node.image_created through the machines service svc returns.
func images(cfg config.Config, dataDir string, st *store.Store, publicURL string, svc func() *machines.Service, log *slog.Logger) *cache.Cache {
	return cache.New(cache.Options{
		Dir:       filepath.Join(dataDir, "images"),
		Assets:    cfg.BootAssetsDir(),
		PublicURL: publicURL,
		Schematic: func(ctx context.Context, id string) ([]byte, error) {
			row, err := st.GetSchematic(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("schematic %s: %w", id, cache.ErrUnknownSchematic)
			}
			if err != nil {
				return nil, err
			}
			return row.Document, nil
		},
		Created: func(ctx context.Context, machineID string, ev *events.ImageCreated) error {
			return svc().ImageCreated(ctx, machineID, ev)
		},
		Logger: log.With("component", "images"),
	})
}

// serveImages serves /images/ from imgs, unauthenticated (machines boot
// from it), and everything else from next.
func serveImages(imgs *cache.Cache, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, cache.Path) {
			imgs.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// buildOnApproval builds the image of each machine approved with a
// schematic, for that machine, so that it is ready when the machine asks
// and node.image_created names it. Without boot assets, or for a
// schematic whose image fails to build, it logs and goes on: the event
// is not retried.
func buildOnApproval(imgs func() *cache.Cache, log *slog.Logger) events.Subscription {
	return events.Subscription{
		Name:    "images",
		Types:   []events.Type{events.TypeProvisioned},
		Timeout: 10 * time.Minute,
		Handle: func(ctx context.Context, env events.Envelope) error {
			ev, err := env.Decode()
			if err != nil {
				return err
			}
			p, ok := ev.(*events.Provisioned)
			if !ok || p.SchematicID == "" {
				return nil
			}
			img, err := imgs().Get(ctx, p.SchematicID, env.MachineID)
			switch {
			case errors.Is(err, bootassets.ErrNotBuilt):
				log.Warn("machine approved with a schematic, but no boot assets to build its image from", "machine", env.MachineID, "schematic", p.SchematicID, "err", err)
			case err != nil:
				log.Error("image of an approved machine's schematic not built", "machine", env.MachineID, "schematic", p.SchematicID, "err", err)
			case img.Fresh:
				log.Info("image built for an approved machine", "machine", env.MachineID, "schematic", p.SchematicID)
			}
			return nil
		},
	}
}

// httpBoot builds the HTTP boot routes (always on: they cost nothing
// until a machine boots) on the boot assets directory assets, creating it
// on first start, and warns when the agent's kernel or initramfs is not
// in it: machines would network-boot into nothing.
func httpBoot(cfg config.Config, assets string, resolver *boot.Resolver, log *slog.Logger, reg prometheus.Registerer) (*httpboot.Server, error) {
	if err := os.MkdirAll(assets, 0o755); err != nil {
		return nil, fmt.Errorf("create boot assets directory: %w", err)
	}
	ipxeDir := cfg.IPXEDir
	if _, err := os.Stat(ipxeDir); err != nil {
		ipxeDir = ""
	}
	srv, err := httpboot.New(httpboot.Options{
		Resolver:   resolver,
		AssetsDir:  assets,
		IPXEDir:    ipxeDir,
		BuildHint:  bootassets.BuildCommand(assets),
		Logger:     log.With("component", "boot"),
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	if missing := srv.MissingAgentAssets(boot.ArchUnknown); len(missing) > 0 {
		log.Warn("boot assets missing", "dir", assets, "missing", strings.Join(missing, ", "), "build", bootassets.BuildCommand(assets),
			"effect", "machines cannot network-boot the agent until they are built")
	}
	return srv, nil
}

// bootNotes is what /readyz says about the boot assets: a line when the
// agent's are missing, looked for at each request, so that building them
// clears it.
func bootNotes(srv *httpboot.Server, assets string) func() []string {
	return func() []string {
		missing := srv.MissingAgentAssets(boot.ArchUnknown)
		if len(missing) == 0 {
			return nil
		}
		return []string{fmt.Sprintf("boot assets: missing %s in %s (run %s)", strings.Join(missing, ", "), assets, bootassets.BuildCommand(assets))}
	}
}
