package store

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/attestation/attestation/controlplane/audit"
)

// maxAuditText bounds a record's result and detail: a refused request can
// carry a long value, which the trail need not keep whole.
const maxAuditText = 1024

// Audit writes rec to the audit trail in this transaction, so that it
// commits with the change it records or not at all. What rec leaves empty
// is filled in: the time (the transaction's), the actor and request ID
// (from ctx, see package audit), the result (audit.ResultOK).
//
// A change without an actor, in rec or in ctx, is not an operator's (an
// agent's, the sweeper's, an event handler's): Audit writes nothing then.
func (t *Tx) Audit(ctx context.Context, rec audit.Record) error {
	if rec.Actor == (audit.Actor{}) {
		a, ok := audit.ActorFrom(ctx)
		if !ok {
			return nil
		}
		rec.Actor = a
	}
	if rec.RequestID == "" {
		rec.RequestID = audit.RequestID(ctx)
	}
	if rec.Result == "" {
		rec.Result = audit.ResultOK
	}
	if rec.Time.IsZero() {
		rec.Time = t.now
	}
	_, err := t.exec(ctx, `INSERT INTO audit_records
		(created_at, actor_subject, actor_name, action, machine_id, request_id, result, detail)
		VALUES (?, ?, ?, ?, NULLIF(?, ''), ?, ?, ?)`,
		rec.Time.UnixNano(), rec.Actor.Subject, rec.Actor.Name, rec.Action, rec.MachineID, rec.RequestID,
		truncate(rec.Result, maxAuditText), truncate(rec.Detail, maxAuditText))
	if err != nil {
		return fmt.Errorf("write audit record of %s: %w", rec.Action, err)
	}
	return nil
}

// truncate cuts s to at most n bytes, at a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// AuditFilter selects audit records; zero fields match everything.
type AuditFilter struct {
	MachineID string
	// Actor matches the actor's subject or name.
	Actor  string
	Action string
	// Since: only records written at or after it.
	Since time.Time
	// AfterID is the record to continue after.
	AfterID int64
	Limit   int
}

// ListAuditRecords returns audit records in commit order.
func (s *Store) ListAuditRecords(ctx context.Context, f AuditFilter) ([]audit.Record, error) {
	where, args := []string{"id > ?"}, []any{f.AfterID}
	if f.MachineID != "" {
		where, args = append(where, "machine_id = ?"), append(args, f.MachineID)
	}
	if f.Actor != "" {
		where, args = append(where, "(actor_subject = ? OR actor_name = ?)"), append(args, f.Actor, f.Actor)
	}
	if f.Action != "" {
		where, args = append(where, "action = ?"), append(args, f.Action)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, f.Since.UnixNano())
	}
	q := `SELECT id, created_at, actor_subject, actor_name, action, COALESCE(machine_id, ''), request_id, result, detail
		FROM audit_records WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var (
			r  audit.Record
			at int64
		)
		if err := rows.Scan(&r.ID, &at, &r.Actor.Subject, &r.Actor.Name, &r.Action, &r.MachineID, &r.RequestID, &r.Result, &r.Detail); err != nil {
			return nil, fmt.Errorf("list audit records: %w", err)
		}
		r.Time = fromNanos(at)
		out = append(out, r)
	}
	return out, rows.Err()
}
