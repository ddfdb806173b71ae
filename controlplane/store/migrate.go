package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Migration is one versioned schema change of a track.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// ForeignKeysOff is the first line of a migration that rebuilds a table
// other tables refer to (SQLite's way to change a column's constraints):
// it runs with foreign key enforcement off, as SQLite's procedure for
// that says, and commits only if PRAGMA foreign_key_check then finds
// nothing.
const ForeignKeysOff = "-- attestation: foreign_keys=off"

func (m Migration) foreignKeysOff() bool { return strings.HasPrefix(m.SQL, ForeignKeysOff+"\n") }

var migrationFile = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// LoadMigrations reads the files NNNN_name.sql in dir of fsys, in version
// order. Versions must start at 1 and have no gaps.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations %s: %w", dir, err)
	}
	var migs []Migration
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		m := migrationFile.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name must look like 0001_create_things.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		migs = append(migs, Migration{Version: v, Name: m[2], SQL: string(b)})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].Version < migs[j].Version })
	for i, m := range migs {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations in %s: want version %d, found %04d_%s", dir, i+1, m.Version, m.Name)
		}
	}
	return migs, nil
}

// SchemaTooNewError: the database was written by a newer build.
type SchemaTooNewError struct {
	Track         string
	Have, Support int
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database schema of %q is at version %d but this build knows only up to %d: "+
		"it was written by a newer attestationd; run that version or restore a backup", e.Track, e.Have, e.Support)
}

// PostgresDir is the directory, in the file system of a track's
// migrations, that holds the track's PostgreSQL migrations: the same
// versions and names as the SQLite ones beside it, in PostgreSQL's SQL.
const PostgresDir = "postgres"

// ErrNoPostgresMigrations: a track has no PostgreSQL migrations.
var ErrNoPostgresMigrations = errors.New("no PostgreSQL migrations (" + PostgresDir + "/NNNN_name.sql beside the SQLite ones): it cannot run on PostgreSQL")

// LoadTrack reads the migrations of a track for this store's engine: on
// SQLite the files NNNN_name.sql at the root of fsys, on PostgreSQL
// those in its directory postgres (ErrNoPostgresMigrations when it has
// none).
func (s *Store) LoadTrack(fsys fs.FS) ([]Migration, error) {
	if s.d.engine != PostgreSQL {
		return LoadMigrations(fsys, ".")
	}
	if fi, err := fs.Stat(fsys, PostgresDir); err != nil || !fi.IsDir() {
		return nil, ErrNoPostgresMigrations
	}
	return LoadMigrations(fsys, PostgresDir)
}

// Migrate applies the pending migrations of a track, each in its own
// transaction together with its bookkeeping row. The core schema is the
// track "core"; every extension gets a track of its own. On PostgreSQL,
// processes that migrate at once take turns.
func (s *Store) Migrate(ctx context.Context, track string, migs []Migration) (applied int, err error) {
	unlock, err := s.d.lockMigrations(ctx, s)
	if err != nil {
		return 0, fmt.Errorf("migrate %s: %w", track, err)
	}
	defer unlock()
	return s.migrate(ctx, track, migs)
}

func (s *Store) migrate(ctx context.Context, track string, migs []Migration) (applied int, err error) {
	var current int
	err = s.w.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE track = ?`, track).Scan(&current)
	if err != nil {
		return 0, fmt.Errorf("read schema version of %q: %w", track, err)
	}
	if current > len(migs) {
		return 0, &SchemaTooNewError{Track: track, Have: current, Support: len(migs)}
	}
	for _, m := range migs[current:] {
		apply := func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (track, version, name, applied_at) VALUES (?, ?, ?, ?)`,
				track, m.Version, m.Name, time.Now().UnixNano())
			return err
		}
		var err error
		switch {
		case !m.foreignKeysOff():
			err = s.inTx(ctx, apply)
		case s.d.foreignKeysOff == nil:
			err = fmt.Errorf("marked %q, which only SQLite has: %s enforces foreign keys throughout", ForeignKeysOff, s.d.engine)
		default:
			err = s.d.foreignKeysOff(s, ctx, apply)
		}
		if err != nil {
			return applied, fmt.Errorf("apply migration %s %04d_%s: %w", track, m.Version, m.Name, err)
		}
		applied++
	}
	return applied, nil
}

// SchemaVersion returns the applied version of a track (0: none).
func (s *Store) SchemaVersion(ctx context.Context, track string) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE track = ?`, track).Scan(&v)
	return v, err
}

// withoutForeignKeys runs fn in a transaction on the writer connection with
// foreign key enforcement off (a pragma that has no effect inside a
// transaction), checks the foreign keys before committing, and turns
// enforcement back on.
func (s *Store) withoutForeignKeys(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return err
	}
	defer func() {
		if _, onErr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`); onErr != nil && err == nil {
			err = fmt.Errorf("turn foreign keys back on: %w", onErr)
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		return err
	}
	var broken []string
	for rows.Next() {
		var table, parent string
		var rowid sql.NullInt64
		var fkid int
		if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
			rows.Close()
			return err
		}
		broken = append(broken, fmt.Sprintf("%s row %d -> %s", table, rowid.Int64, parent))
	}
	rows.Close()
	if len(broken) > 0 {
		return fmt.Errorf("foreign keys broken: %s", strings.Join(broken, ", "))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
