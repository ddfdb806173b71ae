package dhcp

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strings"
	"time"
)

// SQLLeases keeps full mode's leases in the database's dhcp_leases table
// (a core migration), so they survive restarts.
type SQLLeases struct {
	// DB is the write handle (store.Store.DB).
	DB *sql.DB
}

var _ LeaseStore = SQLLeases{}

// Leases returns every stored lease, expired ones included (they free
// their address when read as expired).
func (s SQLLeases) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := s.DB.QueryContext(ctx, `SELECT ip, mac, state, expires_at FROM dhcp_leases`)
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var ip, mac, state string
		var exp int64
		if err := rows.Scan(&ip, &mac, &state, &exp); err != nil {
			return nil, fmt.Errorf("read leases: %w", err)
		}
		a := net.ParseIP(ip).To4()
		if a == nil {
			continue
		}
		out = append(out, Lease{IP: a, MAC: mac, State: state, Expires: time.UnixMilli(exp)})
	}
	return out, rows.Err()
}

// SaveLeases applies the changes in one transaction. Runs of stored
// leases go into multi-row upserts: a group commit carries dozens, and
// each statement is a round trip into SQLite.
func (s SQLLeases) SaveLeases(ctx context.Context, changes []Lease) error {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store leases: %w", err)
	}
	defer tx.Rollback()
	var args []any
	for len(changes) > 0 {
		l := changes[0]
		if l.State == "" {
			if _, err := tx.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE ip = ?`, l.IP.String()); err != nil {
				return fmt.Errorf("store lease of %s: %w", l.IP, err)
			}
			changes = changes[1:]
			continue
		}
		n := 1
		for n < len(changes) && n < maxUpsertRows && changes[n].State != "" {
			n++
		}
		n = upsertRows(n)
		args = args[:0]
		for _, l := range changes[:n] {
			args = append(args, l.IP.String(), l.MAC, l.State, l.Expires.UnixMilli())
		}
		// Rows of one statement apply in order: a later row for the
		// same address updates the earlier one.
		if _, err := tx.ExecContext(ctx, upsertSQL(n), args...); err != nil {
			return fmt.Errorf("store leases of %s..%s: %w", changes[0].IP, changes[n-1].IP, err)
		}
		changes = changes[n:]
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store leases: %w", err)
	}
	return nil
}

// maxUpsertRows is the most rows in one upsert (4 parameters each).
const maxUpsertRows = 128

// upsertRows rounds n down to a power of two, so that a few statement
// texts, each prepared once and cached by the driver, cover every run.
func upsertRows(n int) int {
	p := 1
	for p*2 <= n {
		p *= 2
	}
	return p
}

// upserts holds the statement for each power of two up to maxUpsertRows.
var upserts = func() map[int]string {
	m := map[int]string{}
	for n := 1; n <= maxUpsertRows; n *= 2 {
		var b strings.Builder
		b.WriteString(`INSERT INTO dhcp_leases (ip, mac, state, expires_at) VALUES `)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?)")
		}
		b.WriteString(` ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, expires_at = excluded.expires_at`)
		m[n] = b.String()
	}
	return m
}()

func upsertSQL(n int) string { return upserts[n] }
