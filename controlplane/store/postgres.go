package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed migrations/postgres/core/*.sql
var postgresCoreMigrations embed.FS

// postgresDialect is what PostgreSQL needs said differently.
var postgresDialect = dialect{
	engine:         PostgreSQL,
	coreMigrations: postgresCoreMigrations,
	coreDir:        "migrations/postgres/core",
	// Every group of updates runs serializable: what commits is what a
	// single writer running the groups one after another would have
	// written, as on SQLite, though other instances write beside this
	// one. A conflict aborts the group (serialization_failure), which
	// runs again (group.go).
	groupTx:          &sql.TxOptions{Isolation: sql.LevelSerializable},
	schemaMigrations: createSchemaMigrations("BIGINT"),
	// The arguments' types are said: in a SELECT list, PostgreSQL would
	// take them as text.
	insertMachineMACs: `INSERT INTO machine_macs (mac, registered_at, machine_id)
		SELECT DISTINCT mac, CAST(? AS BIGINT), CAST(? AS TEXT) FROM json_array_elements_text(CAST(? AS json)) AS mac`,
	insertEvent:          insertEventSQL + ` RETURNING seq`,
	insertEventReturning: true,
	// Events commit in the order of their seq, across instances too: a
	// reader that has seen seq N will never see a smaller one appear
	// later (a sequence alone hands out numbers in the order inserts run,
	// not the order transactions commit). The lock is the transaction's:
	// it is held until the commit is visible.
	beforeEvent: func(ctx context.Context, t *Tx) error {
		if t.eventsLocked {
			return nil
		}
		if _, err := t.exec(ctx, `SELECT pg_advisory_xact_lock(?)`, lockKey("events")); err != nil {
			return fmt.Errorf("lock the event log: %w", err)
		}
		t.eventsLocked = true
		return nil
	},
	retryable: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
	},
	lockMigrations: func(ctx context.Context, s *Store) (func(), error) {
		l, ok, err := s.lock(ctx, "migrations", true)
		if err != nil || !ok {
			return nil, errors.Join(errors.New("lock the schema for migrations"), err)
		}
		return l.Release, nil
	},
	checkDurability: checkPostgresDurability,
}

// OpenPostgres connects to the PostgreSQL database of dsn (a postgres://
// or postgresql:// URL, see pgx.ParseConfig) and applies the core
// migrations. Several processes may open one database at once.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password and all.
		return nil, fmt.Errorf("open database %s: cannot parse the PostgreSQL URL", RedactDSN(dsn))
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "attestationd"
	}
	ro := cfg.Copy()
	// The read pool refuses writes, as SQLite's query_only does.
	ro.RuntimeParams["default_transaction_read_only"] = "on"
	w := sql.OpenDB(rebinding{stdlib.GetConnector(*cfg)})
	r := sql.OpenDB(rebinding{stdlib.GetConnector(*ro)})
	// Leases hold a connection each for as long as they lead: a pool of
	// their own, so that they never starve the others.
	leases := sql.OpenDB(rebinding{stdlib.GetConnector(*cfg)})
	leases.SetMaxIdleConns(0)
	for _, db := range []*sql.DB{w, r} {
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(8)
	}
	return open(ctx, &postgresDialect, RedactDSN(dsn), w, r, leases)
}

// checkPostgresDurability refuses a server that could lose a commit it
// acknowledged: fsync off loses it when the machine crashes, and
// synchronous_commit off acknowledges a commit before its WAL is flushed
// (on, local, remote_write and remote_apply all wait for the flush).
func checkPostgresDurability(ctx context.Context, s *Store) error {
	for _, setting := range []string{"fsync", "synchronous_commit"} {
		var v string
		if err := s.w.QueryRowContext(ctx, `SELECT current_setting(?)`, setting).Scan(&v); err != nil {
			return fmt.Errorf("open database %s: read %s: %w", s.path, setting, err)
		}
		if v == "off" {
			return fmt.Errorf("open database %s: the server runs with %s=off: an acknowledged change could be lost; "+
				"set %s = on in postgresql.conf (or with ALTER SYSTEM), and for the database and its user if set there (ALTER DATABASE, ALTER ROLE)",
				s.path, setting, setting)
		}
	}
	return nil
}

// postgresSynchronous is Store.Synchronous on PostgreSQL, in SQLite's
// numbers: 2 (FULL) when a commit waits for its WAL's flush, 0 when not.
func postgresSynchronous(ctx context.Context, s *Store) (int, error) {
	var v string
	if err := s.w.QueryRowContext(ctx, `SELECT current_setting('synchronous_commit')`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read synchronous_commit of %s: %w", s.path, err)
	}
	if v == "off" {
		return 0, nil
	}
	return 2, nil
}

// RedactDSN returns dsn with its password, if any, replaced by "xxxxx",
// in the URL's user part and in a password parameter alike: for logs and
// errors.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable database URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// IsPostgresDSN reports whether dsn names a PostgreSQL database.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// lockKey is the advisory lock key of name, shared by every instance.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("attestation/" + name))
	return int64(h.Sum64())
}

// rebinding connects through pgx and has each connection rewrite the
// store's ? placeholders (and the extensions', which share its handles)
// into PostgreSQL's $1, $2, ...
type rebinding struct{ driver.Connector }

func (c rebinding) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &rebindingConn{conn.(*stdlib.Conn)}, nil
}

// rebindingConn is a pgx connection whose statements with arguments are
// rebound. One without arguments runs as it is (pgx sends it as a simple
// query: a migration's several statements, or a ? that is an operator).
type rebindingConn struct{ *stdlib.Conn }

func (c *rebindingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, rebind(query))
}

func (c *rebindingConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *rebindingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) > 0 {
		query = rebind(query)
	}
	return c.Conn.ExecContext(ctx, query, args)
}

func (c *rebindingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if len(args) > 0 {
		query = rebind(query)
	}
	return c.Conn.QueryContext(ctx, query, args)
}

// rebound caches rebind's work by query text: the same few texts run for
// every request, and scanning one is not free. It stops growing at
// maxRebound texts (queries built with values in their text).
var (
	rebound     sync.Map
	reboundSize struct {
		sync.Mutex
		n int
	}
)

const maxRebound = 4096

// rebind turns each ? placeholder of query into $1, $2, ..., leaving
// alone what is inside quotes ('...', "...", $tag$...$tag$) and comments.
func rebind(query string) string {
	if strings.IndexByte(query, '?') < 0 {
		return query
	}
	if q, ok := rebound.Load(query); ok {
		return q.(string)
	}
	q := rebindScan(query)
	reboundSize.Lock()
	if reboundSize.n < maxRebound {
		if _, loaded := rebound.LoadOrStore(query, q); !loaded {
			reboundSize.n++
		}
	}
	reboundSize.Unlock()
	return q
}

func rebindScan(query string) string {
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); {
		c := query[i]
		switch {
		case c == '?':
			n++
			fmt.Fprintf(&b, "$%d", n)
			i++
			continue
		case c == '\'' || c == '"':
			end := closing(query, i+1, c)
			b.WriteString(query[i:end])
			i = end
			continue
		case c == '-' && strings.HasPrefix(query[i:], "--"):
			end := strings.IndexByte(query[i:], '\n')
			if end < 0 {
				end = len(query) - i
			}
			b.WriteString(query[i : i+end])
			i += end
			continue
		case c == '/' && strings.HasPrefix(query[i:], "/*"):
			end := strings.Index(query[i+2:], "*/")
			if end < 0 {
				end = len(query) - i
			} else {
				end += 4
			}
			b.WriteString(query[i : i+end])
			i += end
			continue
		case c == '$':
			if tag, ok := dollarTag(query[i:]); ok {
				end := strings.Index(query[i+len(tag):], tag)
				if end < 0 {
					end = len(query) - i
				} else {
					end += 2 * len(tag)
				}
				b.WriteString(query[i : i+end])
				i += end
				continue
			}
		}
		b.WriteByte(c)
		i++
	}
	return b.String()
}

// closing returns the index after the quote q that closes a quoted
// string or identifier starting at i (a doubled quote is one character
// of it), or len(s).
func closing(s string, i int, q byte) int {
	for i < len(s) {
		if s[i] == q {
			if i+1 < len(s) && s[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	return len(s)
}

// dollarTag returns the opening $tag$ of a dollar-quoted string at the
// start of s ($$ or $name$).
func dollarTag(s string) (string, bool) {
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			return s[:i+1], true
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (i > 1 && c >= '0' && c <= '9'):
		default:
			return "", false
		}
	}
	return "", false
}
