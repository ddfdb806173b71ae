// Package store keeps the control plane's state in SQLite: machines, the
// event outbox and log, delivery cursors, and versioned migrations with one
// track for the core and one per extension.
//
// Durability: the database runs in WAL mode with synchronous=FULL, so the
// WAL is fsynced at every commit. A change acknowledged to a client
// survives kill -9 of the daemon (SQLite writes it to the WAL before the
// commit returns) and a power loss (the fsync makes the WAL reach the disk
// before the commit returns). synchronous=NORMAL would survive kill -9 too
// but could lose the last commits on power loss, so it is not used.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

//go:embed migrations/core/*.sql
var coreMigrations embed.FS

// CoreTrack is the migration track of the core schema.
const CoreTrack = "core"

// ErrNotFound: no such row.
var ErrNotFound = errors.New("not found")

// Store is the SQLite database. Writes go through one connection (SQLite
// has one writer at a time; queuing in Go is cheaper than busy retries);
// reads use a small pool that WAL lets run beside the writer.
type Store struct {
	path string
	w    *sql.DB
	r    *sql.DB

	// Update requests queue here for the group committer (group.go),
	// which brackets each in a savepoint with these statements.
	updates                        chan *update
	savepoint, release, rollbackTo *sql.Stmt
	quit                           chan struct{}
	done                           chan struct{}
	closeOnce                      sync.Once
}

// Open opens (creating if needed) the database at path and applies the
// core migrations.
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
	s := &Store{path: path, w: w, r: r, updates: make(chan *update), quit: make(chan struct{}), done: make(chan struct{})}
	// Prepared once: without arguments, the driver would parse and
	// prepare the statement again at every execution.
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&s.savepoint, `SAVEPOINT update_fn`},
		{&s.release, `RELEASE update_fn`},
		{&s.rollbackTo, `ROLLBACK TO update_fn`},
	} {
		if *p.stmt, err = w.PrepareContext(ctx, p.sql); err != nil {
			w.Close()
			r.Close()
			return nil, fmt.Errorf("open database %s: prepare %s: %w", path, p.sql, err)
		}
	}
	go s.commitLoop()
	if err := s.init(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	var mode string
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("open database %s: %w", s.path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("open database %s: journal mode is %q, want wal", s.path, mode)
	}
	_, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		track      TEXT NOT NULL,
		version    INTEGER NOT NULL,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL,
		PRIMARY KEY (track, version))`)
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	migs, err := LoadMigrations(coreMigrations, "migrations/core")
	if err != nil {
		return err
	}
	if _, err := s.Migrate(ctx, CoreTrack, migs); err != nil {
		return err
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// DB is the write handle, for extensions that keep their own tables.
func (s *Store) DB() *sql.DB { return s.w }

// ReadDB is the read-only pool.
func (s *Store) ReadDB() *sql.DB { return s.r }

// Close closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.quit) })
	<-s.done
	return errors.Join(s.savepoint.Close(), s.release.Close(), s.rollbackTo.Close(), s.r.Close(), s.w.Close())
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	// Also when fn panics: an open transaction would hold the one writer
	// connection, and every later write would wait for it forever.
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
