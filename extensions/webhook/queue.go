package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/attestation/attestation/controlplane/events"
)

// Delivery states.
const (
	statusPending   = "pending"
	statusDelivered = "delivered"
	statusFailed    = "failed"
)

// delivery is one row of extension_webhook_deliveries: one event for one
// target.
type delivery struct {
	ID             string
	Target         string
	EventID        string
	EventType      events.Type
	Seq            int64
	MachineID      string
	Payload        []byte
	Status         string
	Attempts       int
	NextAttemptAt  time.Time
	LastStatusCode int
	LastError      string
	CreatedAt      time.Time
	DeliveredAt    time.Time // zero until delivered
}

// queue is the deliveries table. The daemon's database handle has one
// connection: every method finishes with it (rows read and closed) before
// returning, and nothing holds it across an HTTP request.
type queue struct {
	db  *sql.DB
	now func() time.Time
}

// enqueue adds one pending delivery of env per target, in one
// transaction, skipping targets that already have this event (a
// redelivered event). It returns the targets that got a new row.
func (q *queue) enqueue(ctx context.Context, env events.Envelope, targets []*target) ([]*target, error) {
	tx, err := q.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("enqueue %s event %s: %w", env.Type, env.ID, err)
	}
	defer tx.Rollback()
	now := q.now().UnixNano()
	var added []*target
	for _, t := range targets {
		res, err := tx.ExecContext(ctx, `INSERT INTO extension_webhook_deliveries
			(id, target, event_id, event_type, seq, machine_id, payload, status, next_attempt_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)
			ON CONFLICT (target, event_id) DO NOTHING`,
			uuid.NewString(), t.name, env.ID, string(env.Type), env.Seq, env.MachineID, string(env.Payload), now, now)
		if err != nil {
			return nil, fmt.Errorf("enqueue %s event %s for %s: %w", env.Type, env.ID, t.name, err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			added = append(added, t)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("enqueue %s event %s: commit: %w", env.Type, env.ID, err)
	}
	return added, nil
}

const deliveryColumns = `id, target, event_id, event_type, seq, machine_id, payload, status, attempts,
	next_attempt_at, last_status_code, last_error, created_at, delivered_at`

func scanDeliveries(rows *sql.Rows) ([]delivery, error) {
	defer rows.Close()
	var out []delivery
	for rows.Next() {
		var (
			d                  delivery
			payload            string
			next, created      int64
			delivered          sql.NullInt64
			eventType, errText string
		)
		if err := rows.Scan(&d.ID, &d.Target, &d.EventID, &eventType, &d.Seq, &d.MachineID, &payload, &d.Status,
			&d.Attempts, &next, &d.LastStatusCode, &errText, &created, &delivered); err != nil {
			return nil, err
		}
		d.EventType, d.Payload, d.LastError = events.Type(eventType), []byte(payload), errText
		d.NextAttemptAt, d.CreatedAt = fromNanos(next), fromNanos(created)
		if delivered.Valid {
			d.DeliveredAt = fromNanos(delivered.Int64)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// due returns up to limit pending deliveries of a target whose time has
// come, oldest event first.
func (q *queue) due(ctx context.Context, targetName string, limit int) ([]delivery, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM extension_webhook_deliveries
		WHERE target = ? AND status = 'pending' AND next_attempt_at <= ?
		ORDER BY seq, created_at LIMIT ?`, targetName, q.now().UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("read due deliveries of %s: %w", targetName, err)
	}
	ds, err := scanDeliveries(rows)
	if err != nil {
		return nil, fmt.Errorf("read due deliveries of %s: %w", targetName, err)
	}
	return ds, nil
}

// nextDue returns when the target's next pending delivery is due; ok is
// false when it has none.
func (q *queue) nextDue(ctx context.Context, targetName string) (at time.Time, ok bool, err error) {
	var n sql.NullInt64
	err = q.db.QueryRowContext(ctx, `SELECT MIN(next_attempt_at) FROM extension_webhook_deliveries
		WHERE target = ? AND status = 'pending'`, targetName).Scan(&n)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read next delivery of %s: %w", targetName, err)
	}
	if !n.Valid {
		return time.Time{}, false, nil
	}
	return fromNanos(n.Int64), true, nil
}

// attempt is the outcome of one POST.
type attempt struct {
	statusCode int    // 0 when no response came
	err        string // "" when delivered
}

// recordDelivered marks d delivered after its attempt'th try.
func (q *queue) recordDelivered(ctx context.Context, d delivery, attempts int, a attempt) error {
	now := q.now().UnixNano()
	_, err := q.db.ExecContext(ctx, `UPDATE extension_webhook_deliveries
		SET status = 'delivered', attempts = ?, last_status_code = ?, last_error = '', delivered_at = ?
		WHERE id = ?`, attempts, a.statusCode, now, d.ID)
	if err != nil {
		return fmt.Errorf("record delivery %s: %w", d.ID, err)
	}
	return nil
}

// recordFailed notes a failed attempt: the delivery stays pending until
// next, or, when next is zero, has failed for good.
func (q *queue) recordFailed(ctx context.Context, d delivery, attempts int, a attempt, next time.Time) error {
	status, at := statusPending, next.UnixNano()
	if next.IsZero() {
		status, at = statusFailed, q.now().UnixNano()
	}
	_, err := q.db.ExecContext(ctx, `UPDATE extension_webhook_deliveries
		SET status = ?, attempts = ?, next_attempt_at = ?, last_status_code = ?, last_error = ?
		WHERE id = ?`, status, attempts, at, a.statusCode, a.err, d.ID)
	if err != nil {
		return fmt.Errorf("record failed attempt of delivery %s: %w", d.ID, err)
	}
	return nil
}

// listFilter selects deliveries for the log; zero fields match everything.
type listFilter struct {
	Target string
	Status string
	Limit  int
}

// list returns deliveries, newest first.
func (q *queue) list(ctx context.Context, f listFilter) ([]delivery, error) {
	var (
		where []string
		args  []any
	)
	if f.Target != "" {
		where, args = append(where, "target = ?"), append(args, f.Target)
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, f.Status)
	}
	query := `SELECT ` + deliveryColumns + ` FROM extension_webhook_deliveries`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	// seq and target, not SQLite's rowid: the query runs on PostgreSQL
	// too. Rows of one enqueue share created_at and seq.
	query += ` ORDER BY created_at DESC, seq DESC, target DESC LIMIT ?`
	rows, err := q.db.QueryContext(ctx, query, append(args, f.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	ds, err := scanDeliveries(rows)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return ds, nil
}

// counts returns how many deliveries each target has in each state.
func (q *queue) counts(ctx context.Context) (map[string]map[string]int, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT target, status, COUNT(*) FROM extension_webhook_deliveries
		GROUP BY target, status`)
	if err != nil {
		return nil, fmt.Errorf("count deliveries: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]int{}
	for rows.Next() {
		var (
			t, s string
			n    int
		)
		if err := rows.Scan(&t, &s, &n); err != nil {
			return nil, fmt.Errorf("count deliveries: %w", err)
		}
		if out[t] == nil {
			out[t] = map[string]int{}
		}
		out[t][s] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count deliveries: %w", err)
	}
	return out, nil
}

// prune deletes the deliveries enqueued before cutoff, whatever their
// state, and returns how many.
func (q *queue) prune(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := q.db.ExecContext(ctx, `DELETE FROM extension_webhook_deliveries WHERE created_at < ?`, cutoff.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("prune deliveries: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
