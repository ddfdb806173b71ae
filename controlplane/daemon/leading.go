package daemon

import (
	"context"
	"log/slog"

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
