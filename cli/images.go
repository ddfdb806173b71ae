package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/attestation/attestation/images/bootassets"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func imagesCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
		Short: "Build what machines boot",
	}
	cmd.AddCommand(imagesBootAssetsCommand(env), imagesBuildCommand(env))
	return cmd
}

func imagesBuildCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "build SCHEMATIC_ID",
		Short: "Build a schematic's images (kernel, initramfs, iPXE script, ISO) and print their URLs",
		Long: `Have the daemon build a schematic's images from its boot assets, unless
they are built already, and print where they are served: vmlinuz,
initramfs, ipxe and attestation.iso under /images/SCHEMATIC_ID/. A machine
or a person fetching one builds it too; this builds it ahead. Each build
records node.image_created.`,
		Example: `  attestation images build 5d2f0c1b8e4a7f3d9c6b2a1e0f8d7c6b5a4e3d2c1b0a9f8e7d6c5b4a3e2d1c0b
  curl -O $(attestation images build $ID -o json | jq -r .isoUrl)`,
		Args: exactArgs("SCHEMATIC_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			resp, err := env.Schematics().BuildImage(cmd.Context(), connect.NewRequest(&attestationv1.BuildImageRequest{Id: strings.ToLower(args[0])}))
			if err != nil {
				return err
			}
			m := resp.Msg
			return env.Print(m, func(w io.Writer) error {
				state := "built before"
				if m.Built {
					state = fmt.Sprintf("built in %v", m.BuildTime.AsDuration().Round(time.Millisecond))
				}
				fmt.Fprintf(w, "schematic %s: %s (answered in %v)\n", m.Id, state, time.Since(start).Round(time.Millisecond))
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "FILE\tSIZE\tSHA256\tURL")
				for _, f := range m.Files {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", f.Name, f.Size, f.Sha256, f.Url)
				}
				return tw.Flush()
			})
		},
	}
}

func imagesBootAssetsCommand(env *Env) *cobra.Command {
	var agent, out, pkg, modules string
	cmd := &cobra.Command{
		Use:   "boot-assets",
		Short: "Fetch Debian's kernel and build the agent's initramfs into the boot assets directory",
		Long: `Write vmlinuz and initrd.img, the files attestationd serves to network-boot
the agent, into --out (attestationd's --boot-assets, by default
DATA_DIR/boot), with what the daemon builds schematics' images from: the
boot loaders of a bootable ISO (Debian's isolinux and syslinux-common for
BIOS, its signed CD GRUB for UEFI), the kernel package and its module index. The kernel is Debian's: apt-get download fetches the package
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
