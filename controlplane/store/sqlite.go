package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"os"
	"path/filepath"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

//go:embed migrations/core/*.sql
var sqliteCoreMigrations embed.FS

// sqliteDialect is what SQLite needs said differently.
var sqliteDialect = dialect{
	engine:           SQLite,
	coreMigrations:   sqliteCoreMigrations,
	coreDir:          "migrations/core",
	schemaMigrations: createSchemaMigrations("INTEGER"),
	machineByMAC: `SELECT ` + machineColumns + ` FROM machines
		WHERE macs LIKE ? ESCAPE '\'
		  AND EXISTS (SELECT 1 FROM json_each(machines.macs) WHERE json_each.value = ?)
		ORDER BY registered_at DESC, id DESC LIMIT 1`,
	insertEvent: insertEventSQL,
	// One writer at a time: a group never conflicts with another.
	retryable: func(error) bool { return false },
	// One process owns the file, and its one writer connection applies
	// migrations one at a time.
	lockMigrations: func(context.Context, *Store) (func(), error) { return func() {}, nil },
	checkDurability: func(ctx context.Context, s *Store) error {
		var mode string
		if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			return fmt.Errorf("open database %s: %w", s.path, err)
		}
		if mode != "wal" {
			return fmt.Errorf("open database %s: journal mode is %q, want wal", s.path, mode)
		}
		return nil
	},
	foreignKeysOff: (*Store).withoutForeignKeys,
}

// Open opens (creating if needed) the SQLite database at path and
// applies the core migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	// Each connection keeps its prepared statements (_stmt_cache_size):
	// preparing a query costs more than running it, and the same few
	// queries run for every request.
	dsn := "file:" + path + "?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=10000&_stmt_cache_size=128"
	w, err := sql.Open("sqlite3", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	r, err := sql.Open("sqlite3", dsn+"&_query_only=true")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	return open(ctx, &sqliteDialect, path, w, r, nil)
}
