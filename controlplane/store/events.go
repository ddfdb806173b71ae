package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/events"
)

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	MachineID string
	Type      events.Type
	AfterSeq  int64
	Limit     int
}

// ListEvents returns events in commit order.
func (s *Store) ListEvents(ctx context.Context, f EventFilter) ([]events.Envelope, error) {
	where, args := []string{"seq > ?"}, []any{f.AfterSeq}
	if f.MachineID != "" {
		where, args = append(where, "machine_id = ?"), append(args, f.MachineID)
	}
	if f.Type != "" {
		where, args = append(where, "type = ?"), append(args, f.Type)
	}
	q := `SELECT seq, id, type, COALESCE(machine_id, ''), ek_fingerprint, created_at, payload, actor_subject, actor_name FROM events WHERE ` +
		strings.Join(where, " AND ") + ` ORDER BY seq`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []events.Envelope
	for rows.Next() {
		var (
			e             events.Envelope
			at            int64
			payload       string
			subject, name sql.NullString
		)
		if err := rows.Scan(&e.Seq, &e.ID, &e.Type, &e.MachineID, &e.EKFingerprint, &at, &payload, &subject, &name); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time, e.Payload = fromNanos(at), []byte(payload)
		if subject.Valid {
			e.Actor = &audit.Actor{Subject: subject.String, Name: name.String}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastEventSeq returns the sequence number of the newest event (0: none).
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&seq)
	return seq, err
}

// Cursor returns how far subscriber has been delivered. A subscriber seen
// for the first time starts at the newest event: it gets what happens from
// now on, not the whole history.
func (s *Store) Cursor(ctx context.Context, subscriber string) (int64, error) {
	var seq int64
	err := s.w.QueryRowContext(ctx, `SELECT seq FROM event_cursors WHERE subscriber = ?`, subscriber).Scan(&seq)
	if err == nil {
		return seq, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read cursor of %s: %w", subscriber, err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO event_cursors (subscriber, seq, updated_at)
		SELECT ?, COALESCE(MAX(seq), 0), ? FROM events`, subscriber, time.Now().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("create cursor of %s: %w", subscriber, err)
	}
	err = s.w.QueryRowContext(ctx, `SELECT seq FROM event_cursors WHERE subscriber = ?`, subscriber).Scan(&seq)
	return seq, err
}

// SetCursor records that subscriber has been delivered everything up to seq.
func (s *Store) SetCursor(ctx context.Context, subscriber string, seq int64) error {
	_, err := s.w.ExecContext(ctx, `UPDATE event_cursors SET seq = ?, updated_at = ? WHERE subscriber = ? AND seq < ?`,
		seq, time.Now().UnixNano(), subscriber, seq)
	if err != nil {
		return fmt.Errorf("advance cursor of %s to %d: %w", subscriber, seq, err)
	}
	return nil
}

// Cursors returns every subscriber's cursor.
func (s *Store) Cursors(ctx context.Context) (map[string]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT subscriber, seq FROM event_cursors`)
	if err != nil {
		return nil, fmt.Errorf("read cursors: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var seq int64
		if err := rows.Scan(&name, &seq); err != nil {
			return nil, err
		}
		out[name] = seq
	}
	return out, rows.Err()
}

// RecordFailure notes that subscriber gave up on event seq.
func (s *Store) RecordFailure(ctx context.Context, subscriber string, seq int64, attempts int, cause error) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO event_failures (subscriber, seq, attempts, error, failed_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (subscriber, seq) DO UPDATE SET attempts = excluded.attempts,
		error = excluded.error, failed_at = excluded.failed_at`,
		subscriber, seq, attempts, cause.Error(), time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("record failed delivery of event %d to %s: %w", seq, subscriber, err)
	}
	return nil
}

// EventsAfter returns up to limit events with seq > after; it makes the
// store an events.Source.
func (s *Store) EventsAfter(ctx context.Context, after int64, limit int) ([]events.Envelope, error) {
	return s.ListEvents(ctx, EventFilter{AfterSeq: after, Limit: limit})
}
