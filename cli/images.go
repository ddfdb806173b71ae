package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attestation/attestation/images/bootassets"
)

func imagesCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
		Short: "Build what machines boot",
	}
	cmd.AddCommand(imagesBootAssetsCommand(env))
	return cmd
}

func imagesBootAssetsCommand(env *Env) *cobra.Command {
	var agent, out, pkg, modules string
	cmd := &cobra.Command{
		Use:   "boot-assets",
		Short: "Fetch Debian's kernel and build the agent's initramfs into the boot assets directory",
		Long: `Write vmlinuz and initrd.img, the files attestationd serves to network-boot
the agent, into --out (attestationd's --boot-assets, by default
DATA_DIR/boot). The kernel is Debian's: apt-get download fetches the package
(no root needed; the package lists must be current, as after apt-get update),
dpkg-deb extracts it, depmod indexes its modules. The initramfs holds the
static agent (--agent, built by make agent) as /init and the kernel's NIC
modules with their dependencies. It runs on this machine, without the
daemon; each file is replaced only once it is written whole.`,
		Example: `  make agent && attestation images boot-assets --agent bin/attestation-agent --out var/boot
  attestation images boot-assets --agent bin/attestation-agent --out var/boot --modules e1000,virtio_pci,virtio_net`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if agent == "" || out == "" {
				return &usageError{fmt.Errorf("--agent and --out are required")}
			}
			bin, err := os.ReadFile(agent)
			if err != nil {
				return fmt.Errorf("read the agent: %w", err)
			}
			o := bootassets.Options{Out: out, Agent: bin, Package: pkg,
				Logger: slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
			if modules != "" {
				o.Modules = strings.Split(modules, ",")
			}
			res, err := bootassets.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "kernel %s\n%s\t%d bytes\n%s\t%d bytes (agent %d bytes, %d modules)\n",
				res.Release, res.Kernel, res.KernelSize, res.Initrd, res.InitrdSize, len(bin), len(res.ModulesResolved))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", "", "the static agent binary (make agent builds bin/attestation-agent)")
	f.StringVar(&out, "out", "", "the boot assets directory to write vmlinuz and initrd.img into")
	f.StringVar(&pkg, "package", "linux-image-amd64", "Debian package of the kernel")
	f.StringVar(&modules, "modules", strings.Join(bootassets.DefaultModules, ","), "comma-separated kernel modules to carry, with their dependencies")
	return cmd
}
