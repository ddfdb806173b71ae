package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/store"
)

// Leases: work that the instances over one database do once, in the one
// instance that leads its lease (store.Lead).
const (
	leaseEvents     = "events-dispatch"
	leaseHeartbeats = "heartbeat-sweeper"
	leaseDHCPFull   = "dhcp-full"
)

// leading runs work while this instance leads the lease name, until ctx
// is done: it waits for the lease, runs work with a context that ends
// when the lease is lost, then waits for the lease again. On SQLite the
// lease is granted at once and never lost. It returns work's error, or
// nil once ctx is done.
func leading(ctx context.Context, st *store.Store, name string, log *slog.Logger, work func(context.Context) error) error {
	for {
		lease, err := st.Lead(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		log.Info("leading", "lease", name)
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lease.Lost():
			case <-wctx.Done():
			}
			cancel()
		}()
		err = work(wctx)
		cancel()
		lost := false
		select {
		case <-lease.Lost():
			lost = ctx.Err() == nil
		default:
		}
		lease.Release()
		if err != nil || ctx.Err() != nil {
			return err
		}
		if lost {
			log.Warn("lost the lease: another instance may lead; waiting to lead again", "lease", name)
		}
	}
}

// errDHCPFullTaken refuses to start DHCP full mode beside another
// instance that serves it: two would hand out addresses from one pool.
var errDHCPFullTaken = errors.New("DHCP full mode is already served by another instance of this database; run full mode on one instance, or proxy mode")

// dhcpFullLease takes the lease of DHCP full mode, when the config asks
// for full mode: one instance over a database serves it. Nil when the
// config serves no full mode.
func dhcpFullLease(ctx context.Context, st *store.Store, cfg config.Config) (*store.Lease, error) {
	if cfg.PXEInterface == "" || cfg.DHCPMode != config.DHCPModeFull {
		return nil, nil
	}
	lease, ok, err := st.TryLead(ctx, leaseDHCPFull)
	if err != nil {
		return nil, fmt.Errorf("DHCP full mode: %w", err)
	}
	if !ok {
		return nil, errDHCPFullTaken
	}
	return lease, nil
}

// holdDHCPFull returns an error when the lease of DHCP full mode is lost
// before ctx is done: the daemon then stops, since another instance may
// start full mode as soon as it is.
func holdDHCPFull(ctx context.Context, lease *store.Lease) error {
	select {
	case <-ctx.Done():
		return nil
	case <-lease.Lost():
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("DHCP full mode: lost the lease %s (the connection to the database broke); stopping, since another instance may serve full mode now", leaseDHCPFull)
	}
}
