package store

import (
	"strings"
	"testing"
)

func TestRebind(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"none", `SELECT 1`, `SELECT 1`},
		{"in order", `UPDATE t SET a = ?, b = ? WHERE id = ?`, `UPDATE t SET a = $1, b = $2 WHERE id = $3`},
		{"string", `SELECT '?', ? FROM t WHERE x = 'it''s ?'`, `SELECT '?', $1 FROM t WHERE x = 'it''s ?'`},
		{"backslash in a string", `WHERE macs LIKE ? ESCAPE '\' AND v = ?`, `WHERE macs LIKE $1 ESCAPE '\' AND v = $2`},
		{"identifier", `SELECT "a?""b" FROM t WHERE x = ?`, `SELECT "a?""b" FROM t WHERE x = $1`},
		{"line comment", "SELECT ? -- why?\n, ?", "SELECT $1 -- why?\n, $2"},
		{"block comment", `SELECT /* ? */ ?`, `SELECT /* ? */ $1`},
		{"dollar quotes", `SELECT $$?$$, $f$ ? $f$, ?`, `SELECT $$?$$, $f$ ? $f$, $1`},
		{"casts", `SELECT ?::text, CAST(? AS BIGINT)`, `SELECT $1::text, CAST($2 AS BIGINT)`},
		{"unterminated string", `SELECT ?, 'x?`, `SELECT $1, 'x?`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := rebind(c.in); got != c.want {
				t.Errorf("rebind(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

// TestRebindCached: a text is scanned once, then found.
func TestRebindCached(t *testing.T) {
	q := `SELECT ? /* TestRebindCached */`
	rebind(q)
	if v, ok := rebound.Load(q); !ok || v != `SELECT $1 /* TestRebindCached */` {
		t.Fatalf("cache holds %v, %v", v, ok)
	}
	if n := testing.AllocsPerRun(100, func() { rebind(q) }); n != 0 {
		t.Errorf("a cached rebind allocates %v times, want 0", n)
	}
}

func TestRedactDSN(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://app:s3cret@db.example:5432/attestation?sslmode=verify-full", "postgres://app:xxxxx@db.example:5432/attestation?sslmode=verify-full"},
		{"postgresql:///attestation?host=/run/postgresql&password=s3cret", "postgresql:///attestation?host=%2Frun%2Fpostgresql&password=xxxxx"},
		{"postgres://app@db/attestation", "postgres://app@db/attestation"},
	} {
		got := RedactDSN(c.in)
		if got != c.want || strings.Contains(got, "s3cret") {
			t.Errorf("RedactDSN(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestOpenPostgresBadURL: a URL pgx cannot parse is refused without
// being quoted with its password.
func TestOpenPostgresBadURL(t *testing.T) {
	_, err := OpenPostgres(t.Context(), "postgres://app:s3cret@db.example:port/attestation")
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "cannot parse the PostgreSQL URL") {
		t.Errorf("got %v, want a parse error without the password", err)
	}
}
