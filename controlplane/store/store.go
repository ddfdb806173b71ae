// Package store keeps the control plane's state: machines, the event
// outbox and log, delivery cursors, and versioned migrations with one
// track for the core and one per extension. It runs on SQLite (the
// default: a file in the data directory, nothing to install) or on
// PostgreSQL (several daemons sharing one database).
//
// There is one implementation for both, over database/sql: SQLite through
// github.com/mattn/go-sqlite3, PostgreSQL through the database/sql driver
// of github.com/jackc/pgx/v5 (its stdlib package). The queries are written
// once, with ? placeholders, which PostgreSQL's connections rewrite into
// $1, $2, ... (once per query text, then cached); what the engines need
// said differently is in one place per engine: sqlite.go and postgres.go
// (dialect.go says what that is). Each engine has its own migrations,
// with the same versions and names: migrations/core for SQLite and
// migrations/postgres/core for PostgreSQL; an extension ships its
// PostgreSQL migrations in a directory postgres beside its SQLite ones.
//
// Writes are group-committed (group.go) on both. Reads use a pool that
// refuses writes.
//
// Durability on SQLite: the database runs in WAL mode with
// synchronous=FULL, so the WAL is fsynced at every commit. A change
// acknowledged to a client survives kill -9 of the daemon (SQLite writes
// it to the WAL before the commit returns) and a power loss (the fsync
// makes the WAL reach the disk before the commit returns).
// synchronous=NORMAL would survive kill -9 too but could lose the last
// commits on power loss, so it is not used.
//
// Durability on PostgreSQL: a commit returns once the server has flushed
// its WAL (synchronous_commit on, fsync on), so an acknowledged change
// survives the daemon's and the server's crash. OpenPostgres refuses a
// server or database with fsync or synchronous_commit off (on, local,
// remote_write and remote_apply all wait for the local flush). Surviving
// the loss of the server's machine is a synchronous standby's
// job (synchronous replication), configured in PostgreSQL.
//
// Several daemons on one PostgreSQL database: each group of updates runs
// serializable and runs again when it conflicts with another daemon's
// (Update); events commit in the order of their seq across daemons (a
// transaction lock taken at the first event it writes); migrations take
// turns (an advisory lock); and Lead gives one daemon at a time the
// leadership of a name (an advisory lock held by a connection).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// CoreTrack is the migration track of the core schema.
const CoreTrack = "core"

// ErrNotFound: no such row.
var ErrNotFound = errors.New("not found")

// Store is the SQLite database. Writes go through one connection (SQLite
// has one writer at a time; queuing in Go is cheaper than busy retries);
// reads use a small pool that WAL lets run beside the writer.
type Store struct {
	d    *dialect
	path string
	w    *sql.DB
	r    *sql.DB
	// leases is PostgreSQL's pool of the connections that hold leases
	// (lead.go); nil on SQLite.
	leases *sql.DB
	// held are the leases this store holds, released by Close.
	heldMu sync.Mutex
	held   map[*Lease]struct{}
	// local are the names leading which an SQLite store holds (lead.go).
	local map[string]bool

	// Update requests queue here for the group committer (group.go),
	// which brackets each in a savepoint with these statements.
	updates                        chan *update
	savepoint, release, rollbackTo *sql.Stmt
	quit                           chan struct{}
	done                           chan struct{}
	closeOnce                      sync.Once
	// groups counts the groups the committer has formed; grouped, the
	// updates they carried.
	groups, grouped atomic.Int64
}

// CommitStats returns how many group commits the store has made (each a
// transaction, on SQLite one fsync of the WAL) and how many updates they
// carried: their ratio is how well concurrent updates share commits.
func (s *Store) CommitStats() (commits, updates int64) {
	return s.groups.Load(), s.grouped.Load()
}

// open makes the store of handles w (writes), r (reads) and leases
// (PostgreSQL's leadership connections; nil on SQLite) and applies the
// core migrations.
func open(ctx context.Context, d *dialect, path string, w, r, leases *sql.DB) (*Store, error) {
	s := &Store{d: d, path: path, w: w, r: r, leases: leases, updates: make(chan *update), quit: make(chan struct{}), done: make(chan struct{})}
	closeAll := func() {
		w.Close()
		r.Close()
		if leases != nil {
			leases.Close()
		}
	}
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
		var err error
		if *p.stmt, err = w.PrepareContext(ctx, p.sql); err != nil {
			closeAll()
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
	if err := s.d.checkDurability(ctx, s); err != nil {
		return err
	}
	unlock, err := s.d.lockMigrations(ctx, s)
	if err != nil {
		return fmt.Errorf("open database %s: %w", s.path, err)
	}
	defer unlock()
	if _, err := s.w.ExecContext(ctx, s.d.schemaMigrations); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	migs, err := LoadMigrations(s.d.coreMigrations, s.d.coreDir)
	if err != nil {
		return err
	}
	if _, err := s.migrate(ctx, CoreTrack, migs); err != nil {
		return err
	}
	return nil
}

// Path is the database file, or PostgreSQL's URL without its password.
func (s *Store) Path() string { return s.path }

// DB is the write handle, for extensions that keep their own tables.
func (s *Store) DB() *sql.DB { return s.w }

// ReadDB is the read-only pool.
func (s *Store) ReadDB() *sql.DB { return s.r }

// Close closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.quit) })
	<-s.done
	s.releaseAll()
	err := errors.Join(s.savepoint.Close(), s.release.Close(), s.rollbackTo.Close(), s.r.Close(), s.w.Close())
	if s.leases != nil {
		err = errors.Join(err, s.leases.Close())
	}
	return err
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

// lookup reads at most one row by key (a primary key or an indexed
// column) from the read pool. Such a read is over in microseconds, so it
// is not made cancellable: a context that can end costs database/sql a
// goroutine per query and the driver a callback to interrupt it, which
// the few lookups of every agent request would pay for nothing.
func (s *Store) lookup(ctx context.Context, query string, args ...any) *sql.Row {
	return s.r.QueryRowContext(context.WithoutCancel(ctx), query, args...)
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
