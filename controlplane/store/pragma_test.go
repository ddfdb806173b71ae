package store

import (
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
)

// TestPragmas checks the settings in effect on both the write handle and
// the read pool, by asking SQLite.
func TestPragmas(t *testing.T) {
	st, err := Open(t.Context(), filepath.Join(t.TempDir(), "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, h := range []struct {
		name string
		db   *sql.DB
	}{{"writer", st.w}, {"reader", st.r}} {
		for _, c := range []struct {
			pragma string
			ok     func(s string, n int64) bool
			want   string
		}{
			{"journal_mode", func(s string, _ int64) bool { return s == "wal" }, "wal"},
			{"synchronous", func(_ string, n int64) bool { return n == 2 }, "2 (FULL)"},
			{"foreign_keys", func(_ string, n int64) bool { return n == 1 }, "1"},
			{"busy_timeout", func(_ string, n int64) bool { return n > 0 }, "> 0"},
			// Sub-journals in memory: a group commit's savepoints
			// would write them to temporary files.
			{"temp_store", func(_ string, n int64) bool { return n == 2 }, "2 (MEMORY)"},
		} {
			t.Run(h.name+"/"+c.pragma, func(t *testing.T) {
				var s string
				if err := h.db.QueryRowContext(t.Context(), "PRAGMA "+c.pragma).Scan(&s); err != nil {
					t.Fatal(err)
				}
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					n = -1
				}
				if !c.ok(s, n) {
					t.Errorf("got %s=%s, want %s", c.pragma, s, c.want)
				}
			})
		}
	}
	var queryOnly int
	if err := st.r.QueryRowContext(t.Context(), "PRAGMA query_only").Scan(&queryOnly); err != nil || queryOnly != 1 {
		t.Errorf("reader: got query_only=%d (%v), want 1", queryOnly, err)
	}
}

// TestSynchronous: what Synchronous reports is the writer's setting, FULL.
func TestSynchronous(t *testing.T) {
	st, err := Open(t.Context(), filepath.Join(t.TempDir(), "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := st.Synchronous(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("got synchronous %d, want 2 (FULL)", n)
	}
}
