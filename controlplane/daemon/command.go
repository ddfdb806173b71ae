package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/logging"
	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/internal/version"
)

// Command returns the attestationd command line.
func Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attestationd",
		Short: "The attestation control plane daemon",
		Long: `attestationd takes bare-metal machines from power-on to provisioned: it serves
the API (Connect, gRPC, gRPC-Web and REST/JSON under /api/v1) on one listener,
keeps machines and their lifecycle events in SQLite, and delivers every event
to the compiled-in extensions.

` + config.Help,
		Example: `  attestationd                                   # :9000, data in ./var
  attestationd --listen 127.0.0.1:9000 --data-dir /var/lib/attestation
  attestationd --tls-self-signed                 # https with a certificate from the CA in DATA_DIR/ca.crt
  attestationd --tls-cert /etc/attestation/tls.crt --tls-key /etc/attestation/tls.key   # kill -HUP reloads them
  ATTESTATION_ADMIN_TOKEN=$(cat token) attestationd --config /etc/attestation/attestationd.yaml`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), os.Getenv)
			if err != nil {
				return err
			}
			level, _ := cfg.SlogLevel()
			hopts := &slog.HandlerOptions{Level: level}
			// Lines are written in batches by a goroutine of their own:
			// a boot storm logs every DHCP offer and ack.
			out := logging.NewWriter(os.Stderr)
			defer out.Close()
			var h slog.Handler = slog.NewTextHandler(out, hopts)
			if cfg.LogFormat == "json" {
				h = slog.NewJSONHandler(out, hopts)
			}
			log := slog.New(h)
			slog.SetDefault(log)
			if path := profilePath(CPUProfileEnv); path != "" {
				stopProfile, err := startCPUProfile(path)
				if err != nil {
					return err
				}
				defer stopProfile()
			}
			if path := profilePath(AllocProfileEnv); path != "" {
				defer writeAllocProfile(path, log)()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return Run(ctx, cfg, Options{Logger: log})
		},
	}
	config.AddFlags(cmd.Flags())
	// cobra prints Version for --version, before RunE loads any config.
	cmd.Version = version.Get().Format(cmd.Name(), extensions.Versions())
	cmd.SetVersionTemplate("{{.Version}}")
	cmd.Flags().Bool("version", false, "print the version, its build, and the compiled-in extensions")
	return cmd
}

// CPUProfileEnv names the environment variable that, when set to a path,
// makes attestationd write a CPU profile of its whole run there (for
// profiling the daemon under make bench's enrollment storm, which runs it
// as a separate process). A "%p" in the path is replaced by the process
// ID, so that each daemon a benchmark starts keeps its own profile (go tool
// pprof merges the files it is given).
const CPUProfileEnv = "ATTESTATION_CPUPROFILE"

// profilePath is the path the environment variable env gives, with "%p"
// replaced by the process ID; empty when env is unset.
func profilePath(env string) string {
	return strings.ReplaceAll(os.Getenv(env), "%p", strconv.Itoa(os.Getpid()))
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// AllocProfileEnv names the environment variable that, when set to a
// path, makes attestationd write a profile of what it allocated in its
// whole run there when it stops (go tool pprof -sample_index=alloc_space
// or alloc_objects; "%p" as for CPUProfileEnv), sampling one allocation
// in 4 KiB rather than Go's one in 512 KiB so that a short storm gives
// enough samples.
const AllocProfileEnv = "ATTESTATION_ALLOCPROFILE"

func writeAllocProfile(path string, log *slog.Logger) (write func()) {
	runtime.MemProfileRate = 4 << 10
	return func() {
		f, err := os.Create(path)
		if err == nil {
			err = errors.Join(pprof.Lookup("allocs").WriteTo(f, 0), f.Close())
		}
		if err != nil {
			log.Error("allocation profile not written", "path", path, "err", err)
		}
	}
}

// Main runs the command line with args and returns the exit code.
func Main(args []string) int {
	cmd := Command()
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "attestationd:", err)
		return 1
	}
	return 0
}
