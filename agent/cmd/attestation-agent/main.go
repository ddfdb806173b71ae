// Command attestation-agent proves the machine's identity to the control
// plane with its TPM, waits for approval, fetches its one-time config and
// heartbeats. As process 1 it is the /init of the network-booted initramfs
// and reads its settings from the kernel command line; otherwise it takes
// flags (see --help).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/attestation/attestation/agent"
	"github.com/attestation/attestation/internal/version"
)

func main() {
	if os.Getpid() == 1 {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		agent.RunInit(context.Background(), log) // never returns
	}
	o, err := agent.ParseArgs(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "attestation-agent:", err)
		os.Exit(2)
	}
	if o.Version {
		fmt.Print(version.Get().Format("attestation-agent", nil))
		return
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, o.Config); err != nil {
		if ctx.Err() != nil {
			o.Logger.Warn("agent stopped", "err", err)
		} else {
			o.Logger.Error("agent failed", "err", err)
		}
		os.Exit(1)
	}
}
