package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Secret returns the secret name, which every process over the database
// shares. When the database has none yet, it stores the value newValue
// returns and reports created; when another process stored one
// meanwhile, that one is returned instead (and created is false), so
// processes starting at once agree.
func (s *Store) Secret(ctx context.Context, name string, newValue func() ([]byte, error)) (value []byte, created bool, err error) {
	const read = `SELECT value FROM secrets WHERE name = ?`
	err = s.w.QueryRowContext(ctx, read, name).Scan(&value)
	if err == nil {
		return value, false, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("read secret %s: %w", name, err)
	}
	v, err := newValue()
	if err != nil {
		return nil, false, err
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		name, v, time.Now().UnixNano())
	if err != nil {
		return nil, false, fmt.Errorf("store secret %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, false, fmt.Errorf("store secret %s: %w", name, err)
	}
	if n == 1 {
		return v, true, nil
	}
	if err := s.w.QueryRowContext(ctx, read, name).Scan(&value); err != nil {
		return nil, false, fmt.Errorf("read secret %s: %w", name, err)
	}
	return value, false, nil
}
