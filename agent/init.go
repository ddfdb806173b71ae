package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/attestation/attestation/agent/hardware"
	"github.com/attestation/attestation/agent/netconf"
	"github.com/attestation/attestation/agent/sysinit"
	"github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/internal/version"
	"github.com/google/go-tpm/tpm2"
)

// DefaultCAFile is the CA bundle an image can bake into the initramfs;
// attestation.ca= names another.
const DefaultCAFile = "/etc/attestation/ca.pem"

const (
	// fatalDelay is how long /init shows a fatal error on the console
	// before powering the machine off.
	fatalDelay = 5 * time.Minute
	// restartDelay is how long /init waits before running the agent
	// again after Run failed.
	restartDelay = 30 * time.Second
)

// InitConfig turns the kernel command line settings into a Config. caExists
// reports whether the baked-in CA bundle is present.
func InitConfig(s sysinit.Settings, caExists bool) (Config, error) {
	cfg := Config{Server: s.URL, TPM: s.TPM, CAFile: s.CA, RequireTPM: s.RequireTPM}
	if cfg.CAFile == "" && caExists {
		cfg.CAFile = DefaultCAFile
	}
	if s.PCRs != "" {
		pcrs, err := ParsePCRs(s.PCRs)
		if err != nil {
			return cfg, fmt.Errorf("attestation.pcrs: %w", err)
		}
		cfg.PCRs = pcrs
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// RunInit is the agent as process 1 of the initramfs. It never returns:
// process 1 exiting panics the kernel. It mounts the kernel filesystems,
// loads the NIC modules, reads its settings from the kernel command line,
// configures the network by DHCP (retrying until it can), then runs Run,
// again after restartDelay whenever it returns, even for a failure that
// ends an ordinary agent (a TPM it may not open, a refusal retrying
// cannot change): the machine has nothing else to do, and the console
// shows why. A setting that is missing or wrong cannot get better by
// retrying: it is logged and the machine is powered off after fatalDelay,
// leaving time to read the console.
func RunInit(ctx context.Context, log *slog.Logger) {
	if err := sysinit.MountAll(); err != nil {
		log.Warn("mount", "err", err)
	}
	if err := sysinit.AttachConsole(); err != nil {
		log.Warn("console", "err", err)
	}
	log.Info("attestation-agent running as /init", "version", version.String())

	settings, err := sysinit.ReadCmdline()
	if err != nil {
		fatal(log, err)
	}
	for _, k := range settings.Unknown {
		log.Warn("unknown kernel parameter ignored", "param", k)
	}
	loadModules(log, settings.Modules)

	_, statErr := os.Stat(DefaultCAFile)
	cfg, err := InitConfig(settings, statErr == nil)
	if err != nil {
		fatal(log, fmt.Errorf("kernel command line: %w", err))
	}
	cfg.Logger = log
	seedRandom(log, cfg.TPM)

	link := bringUpNetwork(ctx, log, settings.Iface)
	go link.Maintain(ctx)

	keepRunning(ctx, cfg, log, restartDelay)
	fatal(log, fmt.Errorf("agent stopped: %w", ctx.Err()))
}

// keepRunning runs Run, and again delay after it returns, until ctx is
// done.
func keepRunning(ctx context.Context, cfg Config, log *slog.Logger, delay time.Duration) {
	for {
		err := Run(ctx, cfg)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("agent returned")
		}
		log.Error("agent stopped: starting again", "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
	}
}

func fatal(log *slog.Logger, err error) {
	log.Error("cannot continue: powering off", "err", err, "in", fatalDelay)
	sysinit.Halt(fatalDelay)
}

// loadModules loads mods, the modules the command line names, every one;
// when it names none, those of the initramfs's module list that the
// machine's devices need (sysinit.LoadForDevices), and the rest of the
// list too when they bring no network interface, or when the initramfs
// has no module index to choose by. It logs each module, then a summary.
func loadModules(log *slog.Logger, mods []sysinit.Module) {
	var (
		loaded []sysinit.Loaded
		rest   []sysinit.Module
		err    error
	)
	if len(mods) > 0 {
		loaded, err = sysinit.LoadModules("", mods)
	} else {
		if mods, err = sysinit.ReadModules(sysinit.ModulesFile); err != nil {
			log.Warn("modules", "err", err)
		}
		loaded, rest, err = sysinit.LoadForDevices("", "/", mods)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			loaded, err = sysinit.LoadModules("", mods)
		case err == nil && len(rest) > 0 && len(hardware.Collector{}.Physical()) == 0:
			log.Warn("no network interface from the drivers the devices match: loading the other modules listed", "modules", moduleNames(rest))
			var more []sysinit.Loaded
			more, err = sysinit.LoadModules("", rest)
			loaded, rest = append(loaded, more...), nil
		}
	}
	if err != nil {
		log.Warn("modules", "err", err)
	}
	n := 0
	for _, l := range loaded {
		switch {
		case l.Err != nil:
			log.Warn("module not loaded", "module", l.Module.Name, "err", l.Err)
		case l.Already:
			log.Info("module already loaded", "module", l.Module.Name)
		default:
			n++
			log.Info("module loaded", "module", l.Module.Name, "path", l.Path)
		}
	}
	log.Info("modules ready", "loaded", n, "not_needed", moduleNames(rest))
}

// moduleNames joins the modules' names with commas.
func moduleNames(mods []sysinit.Module) string {
	names := make([]string, len(mods))
	for i, m := range mods {
		names[i] = m.Name
	}
	return strings.Join(names, ",")
}

// seedRandom feeds the kernel's random number generator from the TPM's
// when it is not ready yet: without it, everything that needs randomness
// (DHCP, TLS, the TPM sessions themselves) blocks until the kernel has
// gathered enough entropy on its own, which takes minutes on a CPU without
// RDRAND.
func seedRandom(log *slog.Logger, spec string) {
	if sysinit.RandomReady() {
		return
	}
	seed, err := tpmRandom(spec, 64)
	if err == nil {
		err = sysinit.AddEntropy(seed)
	}
	if err != nil {
		log.Warn("random number generator not seeded from the TPM", "err", err)
	} else {
		log.Info("random number generator seeded from the TPM", "bytes", len(seed))
	}
	if !sysinit.RandomReady() {
		log.Warn("waiting for the kernel's random number generator (this can take minutes without RDRAND or a TPM)")
	}
}

// tpmRandom reads n bytes from the TPM's random number generator.
func tpmRandom(spec string, n int) ([]byte, error) {
	t, err := tpm.Open(spec)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var out []byte
	for len(out) < n {
		rsp, err := tpm2.GetRandom{BytesRequested: uint16(min(n-len(out), 32))}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("TPM GetRandom: %w", err)
		}
		if len(rsp.RandomBytes.Buffer) == 0 {
			return nil, errors.New("TPM GetRandom: no bytes")
		}
		out = append(out, rsp.RandomBytes.Buffer...)
	}
	return out[:n], nil
}

// bringUpNetwork retries until a link has a DHCP lease: drivers probe
// asynchronously, cables get plugged in, DHCP servers come back.
func bringUpNetwork(ctx context.Context, log *slog.Logger, iface string) *netconf.Link {
	r := retrier{b: Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}}
	for {
		hw := hardware.Collector{}
		names := netconf.Select(hw.Physical(), iface, func(name string) string {
			b, _ := os.ReadFile(filepath.Join("/sys/class/net", name, "address"))
			return strings.TrimSpace(string(b))
		})
		link, err := netconf.Setup(ctx, netconf.Options{Interfaces: names, Logger: log})
		if err == nil {
			return link
		}
		if errors.Is(err, fs.ErrPermission) {
			fatal(log, err)
		}
		d := r.next()
		log.Warn("network not configured", "err", err, "retry_in", d.Round(time.Millisecond))
		time.Sleep(d)
	}
}
