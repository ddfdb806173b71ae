package agent

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/attestation/attestation/agent/tpm"
)

// Options are the command line's settings: a Config plus what only the
// program uses.
type Options struct {
	Config
	LogLevel slog.Level
	// Version asks the program to print its version and exit.
	Version bool
}

// envPrefix names the environment variables that stand in for flags:
// --config-out is ATTESTATION_CONFIG_OUT.
const envPrefix = "ATTESTATION_"

// noEnv are the flags with no environment variable.
var noEnv = map[string]bool{"version": true}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseArgs parses the command line (without the program name). A flag
// wins over its environment variable (from getenv), which wins over the
// default. --help prints the usage to out and returns flag.ErrHelp.
func ParseArgs(args []string, getenv func(string) string, out io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("attestation-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	pcrs := DefaultPCRs
	level := "info"
	o.HeartbeatInterval = DefaultHeartbeatInterval
	o.TPM = tpm.DefaultDevice
	o.ConfigOut = DefaultConfigOut

	fs.StringVar(&o.Server, "server", "", "control plane base `URL`, http://HOST:PORT or https://HOST:PORT (required)")
	fs.BoolVar(&o.RequireTPM, "require-tpm", o.RequireTPM, "never register without a TPM: fail without one (as /init: try again until one is found)")
	fs.StringVar(&o.TPM, "tpm", o.TPM, "`TPM` to use: a device path, tcp://HOST:PORT (a TPM command socket such as swtpm's), or simulator[:SEED] (test builds with cgo only)")
	fs.StringVar(&o.CAFile, "ca", "", "PEM `FILE` of the CAs to trust for an https server (default: the system's)")
	fs.StringVar(&o.ConfigOut, "config-out", o.ConfigOut, "`PATH` to write the one-time config to (mode 0600, parent directories created)")
	fs.StringVar(&pcrs, "pcrs", pcrs, "`PCRS` to quote when the control plane names none, like 0-7 or 0-7,14")
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", o.HeartbeatInterval, "`DURATION` between heartbeats (spread ±20%)")
	fs.BoolVar(&o.Once, "once", false, "exit after writing the config, without heartbeats")
	fs.StringVar(&level, "log-level", level, "`LEVEL`: debug, info, warn or error")
	fs.BoolVar(&o.Version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(out, `Usage: attestation-agent [flags]

attestation-agent proves this machine's identity to the control plane with
its TPM, waits for an operator to approve it, fetches its one-time config
and writes it to --config-out, then sends heartbeats.

Steps, one log line each: tpm opened, ek read, registered, credential
activated, quote sent, attested, waiting for approval, approved, config
written, heartbeat; and beside them, once attested, certificate issued,
then certificate renewed at two thirds of its life (the node certificate,
for a key the TPM holds; not with --once). A machine without a TPM registers with
tpm_available=false; the control plane decides whether to accept it.
Failures that may pass are retried with backoff, refusals an operator can
lift (a decommissioned machine) slowly. One that cannot pass (a TPM path
that is not a device, the simulator in a build without it, a server that
is not the control plane) ends the program with its reason.

Run as /init (process 1) of a network-booted initramfs, it first mounts
/proc, /sys, /dev and /run, loads the NIC modules listed in
attestation.modules=a,b,c or %s, configures the first
link with carrier by DHCP, and takes its settings from the kernel command
line instead of flags: attestation.url=, attestation.ca= (else %s
when present), attestation.tpm=, attestation.pcrs=, attestation.iface=,
attestation.require_tpm=1.
It never exits: errors are retried, and a missing or bad setting powers the
machine off after %s.

Flags (each can also be set with the environment variable shown; a flag
wins over its variable):
`, "/etc/attestation/modules", DefaultCAFile, fatalDelay)
		fs.VisitAll(func(f *flag.Flag) {
			arg, usage := flag.UnquoteUsage(f)
			if arg != "" {
				arg = " " + arg
			}
			if f.DefValue != "" && f.DefValue != "false" {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			env := ""
			if !noEnv[f.Name] {
				env = "  $" + envName(f.Name)
			}
			fmt.Fprintf(out, "  --%s%s%s\n        %s\n", f.Name, arg, env, usage)
		})
	}

	// Environment first, so that flags parsed next override it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v := getenv(name); v != "" && envErr == nil && !noEnv[f.Name] {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("$%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return o, envErr
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	var err error
	if o.PCRs, err = ParsePCRs(pcrs); err != nil {
		return o, err
	}
	if err := o.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return o, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	if o.Version {
		return o, nil
	}
	return o, o.Config.Validate()
}
