package machines

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// DefaultMisses is how many heartbeat intervals may pass without a
// heartbeat before the heartbeat counts as missed.
const DefaultMisses = 3

// sweepBatch bounds the machines reported missing in one transaction.
const sweepBatch = 500

// MissHeartbeats emits node.heartbeat_missed for every attested or
// provisioned machine whose last sign of life (heartbeat, else
// attestation) is older than missedAfter, once per missed deadline: the
// machine is not reported again until a heartbeat (or an attestation)
// clears it. It returns how many machines were reported.
func (s *Service) MissHeartbeats(ctx context.Context, now time.Time, missedAfter time.Duration) (int, error) {
	total := 0
	for {
		silent, err := s.store.SilentMachines(ctx, now.Add(-missedAfter), sweepBatch)
		if err != nil || len(silent) == 0 {
			return total, err
		}
		n := 0
		evs, err := s.store.Update(ctx, func(tx *store.Tx) error {
			n = 0
			for _, old := range silent {
				// Read again: a heartbeat may have come in since.
				m, err := tx.MachineByID(ctx, old.ID)
				if err != nil {
					return err
				}
				last := m.LastHeartbeatAt
				if last.IsZero() {
					last = m.AttestedAt
				}
				if (m.State != lifecycle.Attested && m.State != lifecycle.Provisioned) ||
					!m.HeartbeatMissedAt.IsZero() || last.IsZero() || !last.Before(now.Add(-missedAfter)) {
					continue
				}
				m.HeartbeatMissedAt = tx.Now()
				if err := tx.UpdateMachine(ctx, m); err != nil {
					return err
				}
				if err := tx.Emit(ctx, m, &events.HeartbeatMissed{
					Hostname:      m.Hostname,
					Role:          m.Role,
					LastHeartbeat: m.LastHeartbeatAt,
					Deadline:      last.Add(missedAfter),
				}); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("report missed heartbeats: %w", err)
		}
		s.committed(evs)
		total += n
		if len(silent) < sweepBatch || n == 0 {
			return total, nil
		}
	}
}

// DeleteStaleCredentials deletes the sessions and the records of used
// attestation challenges that expired more than an hour ago (a margin for
// instances whose clocks differ: until its challenge has expired on every
// instance, a record refuses a replay), and the config tokens that expired
// more than a week ago.
func (s *Service) DeleteStaleCredentials(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	_, err := s.store.Update(ctx, func(tx *store.Tx) error {
		var err error
		n, err = tx.DeleteStaleCredentials(ctx, now.Add(-time.Hour), now.Add(-7*24*time.Hour))
		return err
	})
	return n, err
}

// Sweeper reports missed heartbeats and deletes stale credentials, on a
// timer.
type Sweeper struct {
	Machines *Service
	// Interval is how often agents heartbeat; a heartbeat is missed after
	// Misses intervals (DefaultMisses when zero) without one.
	Interval time.Duration
	Misses   int
	Logger   *slog.Logger
}

// cleanupEvery is how often stale credentials are deleted.
const cleanupEvery = 10 * time.Minute

// Run sweeps every half interval until ctx is done, then returns nil. A
// failed sweep is logged and retried at the next tick.
func (w *Sweeper) Run(ctx context.Context) error {
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	misses := w.Misses
	if misses <= 0 {
		misses = DefaultMisses
	}
	missedAfter := time.Duration(misses) * w.Interval
	tick := max(w.Interval/2, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var cleaned time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			n, err := w.Machines.MissHeartbeats(ctx, now, missedAfter)
			if err != nil && ctx.Err() == nil {
				log.Error("heartbeat sweep failed", "err", err)
			}
			if n > 0 {
				log.Info("heartbeats missed", "machines", n, "missed_after", missedAfter)
			}
			if now.Sub(cleaned) >= cleanupEvery {
				cleaned = now
				if n, err := w.Machines.DeleteStaleCredentials(ctx, now); err != nil && ctx.Err() == nil {
					log.Error("deleting stale credentials failed", "err", err)
				} else if n > 0 {
					log.Debug("deleted stale credentials", "rows", n)
				}
			}
		}
	}
}
