package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Schematic is a stored schematic: its ID and canonical JSON.
type Schematic struct {
	ID        string
	Document  []byte
	CreatedAt time.Time
}

// PutSchematic stores s unless a schematic with its ID is stored already
// (content-addressed: then it is the same document); it reports whether
// it stored s, and fills s.CreatedAt from the stored row either way.
func (t *Tx) PutSchematic(ctx context.Context, s *Schematic) (created bool, err error) {
	res, err := t.exec(ctx, `INSERT INTO schematics (id, document, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		s.ID, string(s.Document), t.now.UnixNano())
	if err != nil {
		return false, fmt.Errorf("store schematic %s: %w", s.ID, err)
	}
	n, _ := res.RowsAffected()
	stored, err := scanSchematic(t.queryRow(ctx, `SELECT id, document, created_at FROM schematics WHERE id = ?`, s.ID))
	if err != nil {
		return false, fmt.Errorf("read schematic %s: %w", s.ID, err)
	}
	*s = *stored
	return n == 1, nil
}

// Schematic returns a schematic in this transaction, or ErrNotFound.
func (t *Tx) Schematic(ctx context.Context, id string) (*Schematic, error) {
	return scanSchematic(t.queryRow(ctx, `SELECT id, document, created_at FROM schematics WHERE id = ?`, id))
}

// GetSchematic returns a schematic, or ErrNotFound.
func (s *Store) GetSchematic(ctx context.Context, id string) (*Schematic, error) {
	return scanSchematic(s.lookup(ctx, `SELECT id, document, created_at FROM schematics WHERE id = ?`, id))
}

// ListSchematics returns every schematic, oldest first.
func (s *Store) ListSchematics(ctx context.Context) ([]*Schematic, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, document, created_at FROM schematics ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list schematics: %w", err)
	}
	defer rows.Close()
	var out []*Schematic
	for rows.Next() {
		sc, err := scanSchematic(rows)
		if err != nil {
			return nil, fmt.Errorf("list schematics: %w", err)
		}
		out = append(out, sc)
	}
	return out, rows.Err()
}

func scanSchematic(row scanner) (*Schematic, error) {
	var (
		s       Schematic
		doc     string
		created int64
	)
	err := row.Scan(&s.ID, &doc, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	s.Document, s.CreatedAt = []byte(doc), fromNanos(created)
	return &s, nil
}
