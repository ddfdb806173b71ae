package store_test

import (
	"database/sql"
	"fmt"
	"os"

	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/store"
)

// TestForeignKeysOffMigration: a migration that rebuilds a table others
// refer to runs with foreign keys off, commits when they hold afterwards,
// rolls back when they do not, and leaves enforcement on either way.
func TestForeignKeysOffMigration(t *testing.T) {
	st := open(t, tempDB(t))
	ctx := t.Context()
	base := []store.Migration{{Version: 1, Name: "create", SQL: `
		CREATE TABLE fk_parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
		CREATE TABLE fk_child (parent INTEGER NOT NULL REFERENCES fk_parent (id));
		INSERT INTO fk_parent VALUES (1, 'one');
		INSERT INTO fk_child VALUES (1);`}}
	if _, err := st.Migrate(ctx, "fktest", base); err != nil {
		t.Fatal(err)
	}
	rebuild := func(v int, keep string) store.Migration {
		return store.Migration{Version: v, Name: "rebuild", SQL: store.ForeignKeysOff + "\n" + `
			CREATE TABLE fk_parent_new (id INTEGER PRIMARY KEY, name TEXT);
			INSERT INTO fk_parent_new SELECT * FROM fk_parent WHERE ` + keep + `;
			DROP TABLE fk_parent;
			ALTER TABLE fk_parent_new RENAME TO fk_parent;`}
	}
	// Dropping the row the child needs: refused, nothing applied.
	_, err := st.Migrate(ctx, "fktest", append(base, rebuild(2, "id <> 1")))
	if err == nil || !strings.Contains(err.Error(), "foreign keys broken: fk_child") {
		t.Fatalf("a rebuild that breaks a reference: %v, want it refused", err)
	}
	if v, _ := st.SchemaVersion(ctx, "fktest"); v != 1 {
		t.Fatalf("version %d after a refused migration, want 1", v)
	}
	if _, err := st.Migrate(ctx, "fktest", append(base, rebuild(2, "1"))); err != nil {
		t.Fatal(err)
	}
	var fk int
	if err := st.DB().QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign_keys = %d (%v) after the migration, want 1", fk, err)
	}
	if _, err := st.DB().ExecContext(ctx, `INSERT INTO fk_child VALUES (7)`); err == nil {
		t.Fatal("a dangling reference was accepted after the migration")
	}
}

// TestEventWithoutMachine: an event about no machine is stored (machine_id
// NULL) and listed with an empty machine ID, after the machine events.
func TestEventWithoutMachine(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := t.Context()
		evs, err := st.Update(ctx, func(tx *store.Tx) error {
			return tx.Emit(ctx, &store.Machine{}, &events.ImageCreated{SchematicID: "abc", ISOURL: "http://x/images/abc/attestation.iso"})
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].MachineID != "" {
			t.Fatalf("emitted %+v", evs)
		}
		got, err := st.ListEvents(ctx, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Type != events.TypeImageCreated || got[0].MachineID != "" || got[0].Seq != evs[0].Seq {
			t.Fatalf("listed %+v", got)
		}
		var null bool
		if err := st.DB().QueryRowContext(ctx, `SELECT machine_id IS NULL FROM events`).Scan(&null); err != nil || !null {
			t.Fatalf("machine_id IS NULL = %v (%v)", null, err)
		}
	})
}

// TestEventsMigrationKeepsSequence runs 0008 on an events table whose
// newest events were pruned: the next event still gets a new seq, and the
// rows, with their references, are kept.
func TestEventsMigrationKeepsSequence(t *testing.T) {
	db, err := sql.Open("sqlite3", "file:"+tempDB(t)+"?_foreign_keys=off")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := t.Context()
	old := `CREATE TABLE machines (id TEXT PRIMARY KEY);
		CREATE TABLE events (
			seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
			machine_id TEXT NOT NULL REFERENCES machines (id), ek_fingerprint TEXT NOT NULL,
			created_at INTEGER NOT NULL, payload TEXT NOT NULL);
		CREATE TABLE event_failures (subscriber TEXT NOT NULL, seq INTEGER NOT NULL REFERENCES events (seq));
		INSERT INTO machines VALUES ('m1');`
	if _, err := db.ExecContext(ctx, old); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		if _, err := db.ExecContext(ctx, `INSERT INTO events (id, type, machine_id, ek_fingerprint, created_at, payload) VALUES (?, 't', 'm1', '', 0, '{}')`, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM events WHERE seq > 8; INSERT INTO event_failures VALUES ('s', 3)`); err != nil {
		t.Fatal(err)
	}
	mig, err := os.ReadFile("migrations/core/0008_events_without_machine.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, string(mig)); err != nil {
		t.Fatal(err)
	}
	res, err := db.ExecContext(ctx, `INSERT INTO events (id, type, machine_id, ek_fingerprint, created_at, payload) VALUES ('new', 't', NULL, '', 0, '{}')`)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := res.LastInsertId(); seq != 11 {
		t.Errorf("the first event after the migration got seq %d, want 11", seq)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events JOIN event_failures USING (seq) WHERE machine_id = 'm1'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("event_failures' event after the migration: %d rows (%v), want 1", n, err)
	}
}
