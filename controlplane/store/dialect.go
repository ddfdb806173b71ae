package store

import (
	"context"
	"database/sql"
	"io/fs"
)

// Engine is the database engine behind a store.
type Engine string

// The engines.
const (
	SQLite     Engine = "sqlite"
	PostgreSQL Engine = "postgres"
)

// dialect is what differs between the engines, one value per engine
// (sqlite.go, postgres.go); the rest of the store is the same SQL, with ?
// placeholders, for both.
type dialect struct {
	engine Engine
	// coreMigrations holds the core track in coreDir.
	coreMigrations fs.FS
	coreDir        string
	// groupTx begins the transaction of a group of updates.
	groupTx *sql.TxOptions
	// schemaMigrations creates the migrations' bookkeeping table.
	schemaMigrations string
	// insertMachineMACs writes the machine_macs rows of a machine: its
	// registered_at and ID (the first two arguments) beside each distinct
	// MAC of its macs column (the third), as migration 0012 does.
	insertMachineMACs string
	// insertEvent writes an event to the outbox; with
	// insertEventReturning it returns the seq (else LastInsertId has it).
	insertEvent          string
	insertEventReturning bool
	// beforeEvent, when set, runs before a transaction writes an event.
	beforeEvent func(ctx context.Context, t *Tx) error
	// retryable reports whether a group that failed with err is to run
	// again as a whole: a conflict with another writer, not its fault.
	retryable func(err error) bool
	// lockMigrations keeps other processes from migrating at once until
	// the returned function is called.
	lockMigrations func(ctx context.Context, s *Store) (unlock func(), err error)
	// checkDurability refuses a database that could lose an
	// acknowledged commit.
	checkDurability func(ctx context.Context, s *Store) error
	// foreignKeysOff runs a migration marked ForeignKeysOff; nil: such a
	// migration is refused.
	foreignKeysOff func(s *Store, ctx context.Context, fn func(*sql.Tx) error) error
}

// insertEventSQL writes one event to the outbox.
const insertEventSQL = `INSERT INTO events (id, type, machine_id, ek_fingerprint, created_at, payload, actor_subject, actor_name)
		VALUES (?, ?, NULLIF(?, ''), ?, ?, ?, ?, ?)`

// Engine is the store's database engine.
func (s *Store) Engine() Engine { return s.d.engine }

// createSchemaMigrations creates the migrations' bookkeeping table, its
// time (Unix nanoseconds) of the engine's 64-bit integer type.
func createSchemaMigrations(int64Type string) string {
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
		track      TEXT NOT NULL,
		version    INTEGER NOT NULL,
		name       TEXT NOT NULL,
		applied_at ` + int64Type + ` NOT NULL,
		PRIMARY KEY (track, version))`
}
