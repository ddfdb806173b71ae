package daemon

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/internal/pgtest"
)

// TestDHCPFullModeOnOneInstance: of the instances over one PostgreSQL,
// one serves DHCP full mode; the daemon of a second is refused at start,
// before it serves anything, and proxy mode beside it is not.
func TestDHCPFullModeOnOneInstance(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.DSN(t)
	full := config.Default()
	full.Database = dsn
	full.Listen = "127.0.0.1:0"
	full.PXEInterface = "lo"
	full.DHCPMode = config.DHCPModeFull
	full.DHCPRange = "127.0.0.100-127.0.0.200"
	if err := full.Validate(); err != nil {
		t.Fatal(err)
	}

	// The first instance takes the lease, as its Run does at start.
	first, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	lease, err := dhcpFullLease(ctx, first, full)
	if err != nil || lease == nil {
		t.Fatalf("first instance: lease %v, %v; want the lease", lease, err)
	}

	second := full
	second.DataDir = filepath.Join(t.TempDir(), "data")
	listened := false
	err = Run(ctx, second, Options{
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Listening: func(net.Addr) { listened = true },
	})
	if !errors.Is(err, errDHCPFullTaken) || listened {
		t.Fatalf("second instance in full mode: %v (serving: %v); want refused with %q", err, listened, errDHCPFullTaken)
	}
	t.Logf("refused: %v", err)

	// Released (the first instance stopped), the lease is the next one's.
	lease.Release()
	again, err := dhcpFullLease(ctx, first, second)
	if err != nil || again == nil {
		t.Fatalf("after the release: lease %v, %v; want it", again, err)
	}
	again.Release()

	// Proxy mode takes no lease.
	proxy := full
	proxy.DHCPMode = config.DHCPModeProxy
	if l, err := dhcpFullLease(ctx, first, proxy); l != nil || err != nil {
		t.Errorf("proxy mode: lease %v, %v; want none", l, err)
	}
}
