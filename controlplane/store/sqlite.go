package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
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
	insertMachineMACs: `INSERT INTO machine_macs (mac, registered_at, machine_id)
		SELECT DISTINCT value, ?, ? FROM json_each(?)`,
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
	w := sql.OpenDB(sqliteConnector{dsn + "&_txlock=immediate"})
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	r := sql.OpenDB(sqliteConnector{dsn + "&_query_only=true"})
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	return open(ctx, &sqliteDialect, path, w, r, nil)
}

// sqliteDriver is the driver the sqlite3 import registers.
var sqliteDriver = func() driver.Driver {
	db, _ := sql.Open("sqlite3", "") // connects to nothing yet
	defer db.Close()
	return db.Driver()
}()

// sqlitePragmas are set on every connection, after what its DSN says.
//
// temp_store=MEMORY keeps the sub-journal in memory: a group commit runs
// each update in a savepoint (group.go), and a savepoint keeps in the
// sub-journal the page images it would restore, of every page that an
// earlier update of the group already changed. SQLite keeps that journal
// in memory up to 64 KiB and then in a temporary file, which took a
// pwrite for each page image and another for its header, several times
// as many writes as the commit's own to the WAL. What it holds is only
// ever needed to undo an update of a transaction that is not committed
// yet: a crash loses nothing by it.
var sqlitePragmas = []string{`PRAGMA temp_store = MEMORY`}

// sqliteConnector opens connections to dsn with sqlitePragmas set.
type sqliteConnector struct{ dsn string }

func (c sqliteConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := sqliteDriver.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	for _, p := range sqlitePragmas {
		if _, err := conn.(driver.ExecerContext).ExecContext(ctx, p, nil); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return conn, nil
}

func (c sqliteConnector) Driver() driver.Driver { return sqliteDriver }
