package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/google/uuid"
)

// Machine is one row of the machines table.
type Machine struct {
	ID                 string
	EKFingerprint      string
	State              lifecycle.State
	MACs               []string
	SMBIOSUUID         string
	Serial             string
	Product            string
	IP                 string
	Hostname           string
	Role               string
	SchematicID        string
	PreRegistered      bool
	TPMAvailable       bool
	RegisteredAt       time.Time
	FirstSeenAt        time.Time // zero: not yet
	ApprovedAt         time.Time
	LastHeartbeatAt    time.Time
	DecommissionedAt   time.Time
	DecommissionReason string
	UpdatedAt          time.Time
	// AKPublic (TPMT_PUBLIC) and AKName are the attestation key bound to
	// the EK by the last successful credential activation.
	AKPublic []byte
	AKName   []byte
	// ConflictWith is the ID of an older machine that had reported the same
	// SMBIOS UUID with another EK when this one was registered.
	ConflictWith      string
	AttestedAt        time.Time
	ConfiguredAt      time.Time
	HeartbeatMissedAt time.Time

	// stored is the row as this Machine was read or inserted, for
	// UpdateMachine to write only what changed since.
	stored []any
}

const machineColumns = `id, ek_fingerprint, state, macs, smbios_uuid, serial, product, ip, hostname, role,
	schematic_id, pre_registered, tpm_available, registered_at, first_seen_at, approved_at,
	last_heartbeat_at, decommissioned_at, decommission_reason, updated_at,
	ak_public, ak_name, conflict_with, attested_at, configured_at, heartbeat_missed_at`

// updateColumns are the columns after id, in the order of row.
var updateColumns = strings.Split(strings.Join(strings.Fields(strings.TrimPrefix(machineColumns, "id,")), ""), ",")

// The columns of row that machine_macs is derived from.
var (
	macsColumn         = slices.Index(updateColumns, "macs")
	registeredAtColumn = slices.Index(updateColumns, "registered_at")
)

// row returns the values of updateColumns as m is stored.
func (m *Machine) row() []any {
	if m.MACs == nil {
		m.MACs = []string{}
	}
	macs, _ := json.Marshal(m.MACs)
	return m.rowWith(string(macs))
}

// rowWith is row with the macs column given (as read, when scanning).
func (m *Machine) rowWith(macs string) []any {
	return []any{
		m.EKFingerprint, string(m.State), macs, m.SMBIOSUUID, m.Serial, m.Product, m.IP,
		m.Hostname, m.Role, m.SchematicID, m.PreRegistered, m.TPMAvailable, m.RegisteredAt.UnixNano(),
		toNull(m.FirstSeenAt), toNull(m.ApprovedAt), toNull(m.LastHeartbeatAt), toNull(m.DecommissionedAt),
		m.DecommissionReason, m.UpdatedAt.UnixNano(),
		m.AKPublic, m.AKName, m.ConflictWith, toNull(m.AttestedAt), toNull(m.ConfiguredAt), toNull(m.HeartbeatMissedAt),
	}
}

// sameValue reports whether two values of row are stored alike.
func sameValue(a, b any) bool {
	if x, ok := a.([]byte); ok {
		y, ok := b.([]byte)
		return ok && (x == nil) == (y == nil) && bytes.Equal(x, y)
	}
	return a == b
}

type scanner interface{ Scan(...any) error }

func scanMachine(row scanner) (*Machine, error) {
	var (
		m                                   Machine
		macs                                string
		registered, updated                 int64
		firstSeen, approved, heartbeat, dec sql.NullInt64
		attested, configured, missed        sql.NullInt64
	)
	err := row.Scan(&m.ID, &m.EKFingerprint, &m.State, &macs, &m.SMBIOSUUID, &m.Serial, &m.Product,
		&m.IP, &m.Hostname, &m.Role, &m.SchematicID, &m.PreRegistered, &m.TPMAvailable, &registered,
		&firstSeen, &approved, &heartbeat, &dec, &m.DecommissionReason, &updated,
		&m.AKPublic, &m.AKName, &m.ConflictWith, &attested, &configured, &missed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(macs), &m.MACs); err != nil {
		return nil, fmt.Errorf("machine %s: decode macs: %w", m.ID, err)
	}
	m.RegisteredAt, m.UpdatedAt = fromNanos(registered), fromNanos(updated)
	m.FirstSeenAt, m.ApprovedAt = fromNull(firstSeen), fromNull(approved)
	m.LastHeartbeatAt, m.DecommissionedAt = fromNull(heartbeat), fromNull(dec)
	m.AttestedAt, m.ConfiguredAt, m.HeartbeatMissedAt = fromNull(attested), fromNull(configured), fromNull(missed)
	m.stored = m.rowWith(macs)
	return &m, nil
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func fromNull(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromNanos(n.Int64)
}

func toNull(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

// Tx is a write transaction: machine changes and the events they cause
// commit together or not at all.
type Tx struct {
	tx      *sql.Tx
	d       *dialect
	now     time.Time
	emitted []events.Envelope
	// eventsLocked: this transaction holds PostgreSQL's event log lock
	// (postgres.go).
	eventsLocked bool
}

// exec, query and queryRow run a statement of the transaction with the
// caller's context stripped of its cancellation. The transaction is shared
// by a group of updates (group.go): the driver interrupts a statement whose
// context ends (sqlite3_interrupt), which would roll back the whole
// transaction and with it the other callers' updates. A caller that has
// gone is noticed before its update runs instead. (It also spares the
// driver a goroutine per statement, which it starts to watch a context
// that can end.)
func (t *Tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(context.WithoutCancel(ctx), query, args...)
}

func (t *Tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(context.WithoutCancel(ctx), query, args...)
}

func (t *Tx) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(context.WithoutCancel(ctx), query, args...)
}

// SQL is the underlying transaction, for extensions' own tables.
func (t *Tx) SQL() *sql.Tx { return t.tx }

// Now is the transaction's timestamp, the same for every row it writes.
func (t *Tx) Now() time.Time { return t.now }

// MachineByID returns the machine with the given ID, or ErrNotFound.
func (t *Tx) MachineByID(ctx context.Context, id string) (*Machine, error) {
	return scanMachine(t.queryRow(ctx, `SELECT `+machineColumns+` FROM machines WHERE id = ?`, id))
}

// MachineByEK returns the machine with the given EK fingerprint, or ErrNotFound.
func (t *Tx) MachineByEK(ctx context.Context, fp string) (*Machine, error) {
	return scanMachine(t.queryRow(ctx, `SELECT `+machineColumns+` FROM machines WHERE ek_fingerprint = ?`, fp))
}

// InsertMachine adds m, assigning its ID when empty and its timestamps.
func (t *Tx) InsertMachine(ctx context.Context, m *Machine) error {
	if m.ID == "" {
		m.ID = uuid.NewString()
	}
	if m.RegisteredAt.IsZero() {
		m.RegisteredAt = t.now
	}
	m.UpdatedAt = t.now
	row := m.row()
	_, err := t.exec(ctx, `INSERT INTO machines (`+machineColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		append([]any{m.ID}, row...)...)
	if err != nil {
		return fmt.Errorf("insert machine %s: %w", m.ID, err)
	}
	if err := t.insertMACs(ctx, m, row); err != nil {
		return err
	}
	m.stored = row
	return nil
}

// insertMACs writes the machine_macs rows of m, stored as row.
func (t *Tx) insertMACs(ctx context.Context, m *Machine, row []any) error {
	if len(m.MACs) == 0 {
		return nil
	}
	if _, err := t.exec(ctx, t.d.insertMachineMACs, row[registeredAtColumn], m.ID, row[macsColumn]); err != nil {
		return fmt.Errorf("index the MACs of machine %s: %w", m.ID, err)
	}
	return nil
}

// UpdateMachine writes m: the columns that differ from the row it was
// read as (every column for a Machine not read from the store), so that
// an update leaves the indexes of unchanged columns alone, and with them
// pages the commit would otherwise write again. Read m in the transaction
// that updates it, as every caller does: a column changed by another
// transaction since m was read is left as that transaction wrote it.
// The rows of machine_macs are written again only when the MACs or the
// registration time changed.
func (t *Tx) UpdateMachine(ctx context.Context, m *Machine) error {
	m.UpdatedAt = t.now
	row := m.row()
	set := make([]string, 0, len(row))
	args := make([]any, 0, len(row)+1)
	macsChanged := false
	for i, v := range row {
		if m.stored != nil && sameValue(v, m.stored[i]) {
			continue
		}
		set = append(set, updateColumns[i]+" = ?")
		args = append(args, v)
		macsChanged = macsChanged || i == macsColumn || i == registeredAtColumn
	}
	if len(set) == 0 {
		return nil // read in this transaction, as it is
	}
	res, err := t.exec(ctx, `UPDATE machines SET `+strings.Join(set, ", ")+` WHERE id = ?`, append(args, m.ID)...)
	if err != nil {
		return fmt.Errorf("update machine %s: %w", m.ID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("update machine %s: %w", m.ID, ErrNotFound)
	}
	if macsChanged {
		if _, err := t.exec(ctx, `DELETE FROM machine_macs WHERE machine_id = ?`, m.ID); err != nil {
			return fmt.Errorf("index the MACs of machine %s: %w", m.ID, err)
		}
		if err := t.insertMACs(ctx, m, row); err != nil {
			return err
		}
	}
	// m.stored stays the row as read: this transaction may yet roll back.
	return nil
}

// Emit writes ev to the outbox in this transaction, stamping its ID,
// type, machine and time from m, and its actor from ctx (audit.ActorFrom:
// the operator whose request this is; none for an agent's or the
// daemon's own change).
func (t *Tx) Emit(ctx context.Context, m *Machine, ev events.Event) error {
	h := ev.Header()
	h.Event = events.TypeOf(ev)
	// Time-ordered (UUIDv7): the unique index on event IDs grows at its
	// end instead of at random pages, which a commit would write.
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("make event ID: %w", err)
	}
	h.ID = id.String()
	h.MachineID, h.EKFingerprint = m.ID, m.EKFingerprint
	if h.Timestamp.IsZero() {
		h.Timestamp = t.now
	}
	var subject, name sql.NullString
	if h.Actor == nil {
		if a, ok := audit.ActorFrom(ctx); ok {
			h.Actor = &a
		}
	}
	if h.Actor != nil {
		subject = sql.NullString{String: h.Actor.Subject, Valid: true}
		name = sql.NullString{String: h.Actor.Name, Valid: true}
	}
	payload, err := events.Encode(ev)
	if err != nil {
		return err
	}
	if t.d.beforeEvent != nil {
		if err := t.d.beforeEvent(ctx, t); err != nil {
			return fmt.Errorf("write %s event to outbox: %w", h.Event, err)
		}
	}
	// The arguments are spelt out at each call, not passed along in a
	// slice: that would cost the hot path an allocation.
	if t.d.insertEventReturning {
		err = t.queryRow(ctx, t.d.insertEvent,
			h.ID, h.Event, h.MachineID, h.EKFingerprint, h.Timestamp.UnixNano(), string(payload), subject, name).Scan(&h.Seq)
	} else {
		var res sql.Result
		res, err = t.exec(ctx, t.d.insertEvent,
			h.ID, h.Event, h.MachineID, h.EKFingerprint, h.Timestamp.UnixNano(), string(payload), subject, name)
		if err == nil {
			h.Seq, err = res.LastInsertId()
		}
	}
	if err != nil {
		return fmt.Errorf("write %s event to outbox: %w", h.Event, err)
	}
	// As ListEvents reads it back: the dispatcher delivers either.
	t.emitted = append(t.emitted, events.Envelope{
		Seq: h.Seq, ID: h.ID, Type: h.Event, MachineID: h.MachineID,
		EKFingerprint: h.EKFingerprint, Time: fromNanos(h.Timestamp.UnixNano()), Actor: h.Actor, Payload: payload,
	})
	return nil
}

// GetMachine returns the machine with the given ID, or ErrNotFound.
func (s *Store) GetMachine(ctx context.Context, id string) (*Machine, error) {
	return scanMachine(s.lookup(ctx, `SELECT `+machineColumns+` FROM machines WHERE id = ?`, id))
}

// GetMachineByEK returns the machine with the given EK fingerprint, or ErrNotFound.
func (s *Store) GetMachineByEK(ctx context.Context, fp string) (*Machine, error) {
	return scanMachine(s.lookup(ctx, `SELECT `+machineColumns+` FROM machines WHERE ek_fingerprint = ?`, fp))
}

// MachineFilter selects machines; zero fields match everything.
type MachineFilter struct {
	State lifecycle.State
	Role  string
	// After is the (registered_at, id) position to continue after.
	AfterTime time.Time
	AfterID   string
	Limit     int
}

// ListMachines returns machines ordered by registration time, then ID.
func (s *Store) ListMachines(ctx context.Context, f MachineFilter) ([]*Machine, error) {
	var (
		where []string
		args  []any
	)
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.Role != "" {
		where, args = append(where, "role = ?"), append(args, f.Role)
	}
	if f.AfterID != "" {
		where = append(where, "(registered_at > ? OR (registered_at = ? AND id > ?))")
		args = append(args, f.AfterTime.UnixNano(), f.AfterTime.UnixNano(), f.AfterID)
	}
	q := `SELECT ` + machineColumns + ` FROM machines`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY registered_at, id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	defer rows.Close()
	var out []*Machine
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, fmt.Errorf("list machines: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// CountMachinesByState returns how many machines are in each state.
func (s *Store) CountMachinesByState(ctx context.Context) (map[lifecycle.State]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM machines GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count machines: %w", err)
	}
	defer rows.Close()
	out := map[lifecycle.State]int{}
	for rows.Next() {
		var st lifecycle.State
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}
