package dhcp

import (
	"context"
	"database/sql"
	"fmt"
	"net"
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

// SaveLeases applies the changes in one transaction.
func (s SQLLeases) SaveLeases(ctx context.Context, changes []Lease) error {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store leases: %w", err)
	}
	defer tx.Rollback()
	for _, l := range changes {
		if l.State == "" {
			_, err = tx.ExecContext(ctx, `DELETE FROM dhcp_leases WHERE ip = ?`, l.IP.String())
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO dhcp_leases (ip, mac, state, expires_at) VALUES (?, ?, ?, ?)
				ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, expires_at = excluded.expires_at`,
				l.IP.String(), l.MAC, l.State, l.Expires.UnixMilli())
		}
		if err != nil {
			return fmt.Errorf("store lease of %s: %w", l.IP, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store leases: %w", err)
	}
	return nil
}
