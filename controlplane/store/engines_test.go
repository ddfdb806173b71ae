package store_test

import (
	"context"
	"os"
	"testing"

	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// backend opens stores of one engine.
type backend struct {
	name string
	// newDB makes a fresh, empty database and returns what openDB opens
	// it by: a file path or a PostgreSQL URL.
	newDB  func(t testing.TB) string
	openDB func(ctx context.Context, db string) (*store.Store, error)
	// coreDir holds the engine's core migrations in the source tree.
	coreDir string
}

var (
	sqliteBackend   = backend{"sqlite", tempDB, store.Open, "migrations/core"}
	postgresBackend = backend{"postgres", pgtest.DSN, store.OpenPostgres, "migrations/postgres/core"}
)

// forEachEngine runs fn as a subtest for each engine: every behaviour of
// the store is checked on SQLite and on PostgreSQL.
func forEachEngine(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// open opens db, closing it when the test ends.
func (b backend) open(t *testing.T, db string) *store.Store {
	t.Helper()
	st, err := b.openDB(t.Context(), db)
	if err != nil {
		t.Fatalf("open %s database: %v", b.name, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// fresh opens a fresh database.
func (b backend) fresh(t *testing.T) *store.Store {
	t.Helper()
	return b.open(t, b.newDB(t))
}
