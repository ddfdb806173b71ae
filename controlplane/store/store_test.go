package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

func open(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func tempDB(t testing.TB) string { return filepath.Join(t.TempDir(), "attestation.db") }

type migrationRow struct {
	Track     string
	Version   int
	Name      string
	AppliedAt int64
}

func migrationRows(t *testing.T, st *store.Store) []migrationRow {
	t.Helper()
	rows, err := st.DB().QueryContext(t.Context(), `SELECT track, version, name, applied_at FROM schema_migrations ORDER BY track, version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var r migrationRow
		if err := rows.Scan(&r.Track, &r.Version, &r.Name, &r.AppliedAt); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// coreMigrations are the files the build embeds, read from the source tree.
func coreMigrations(t *testing.T, b backend) []store.Migration {
	t.Helper()
	migs, err := store.LoadMigrations(os.DirFS("."), b.coreDir)
	if err != nil {
		t.Fatal(err)
	}
	return migs
}

func tables(t *testing.T, st *store.Store) []string {
	t.Helper()
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`
	if st.Engine() == store.PostgreSQL {
		q = `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename`
	}
	rows, err := st.DB().QueryContext(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

func TestOpenAppliesCoreMigrations(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		migs := coreMigrations(t, b)
		if len(migs) == 0 {
			t.Fatal("got no core migrations in migrations/core")
		}
		rows := migrationRows(t, st)
		if len(rows) != len(migs) {
			t.Fatalf("got %d schema_migrations rows, want %d: %+v", len(rows), len(migs), rows)
		}
		for i, m := range migs {
			r := rows[i]
			if r.Track != store.CoreTrack || r.Version != m.Version || r.Name != m.Name || r.AppliedAt == 0 {
				t.Errorf("row %d: got %+v, want core %d %s with applied_at", i, r, m.Version, m.Name)
			}
		}
		v, err := st.SchemaVersion(t.Context(), store.CoreTrack)
		if err != nil || v != len(migs) {
			t.Errorf("SchemaVersion(core): got %d, %v, want %d", v, err, len(migs))
		}
		for _, want := range []string{"event_cursors", "event_failures", "events", "machines", "schema_migrations"} {
			if !slices.Contains(tables(t, st), want) {
				t.Errorf("got tables %v, want %s among them", tables(t, st), want)
			}
		}
	})
}

func TestReopenIsNoop(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		db := b.newDB(t)
		st, err := b.openDB(t.Context(), db)
		if err != nil {
			t.Fatal(err)
		}
		first := migrationRows(t, st)
		st.Close()

		st = b.open(t, db)
		if again := migrationRows(t, st); !slices.Equal(again, first) {
			t.Errorf("after reopening: got %+v, want %+v", again, first)
		}
		applied, err := st.Migrate(t.Context(), store.CoreTrack, coreMigrations(t, b))
		if err != nil || applied != 0 {
			t.Errorf("Migrate(core) again: got %d applied, %v, want 0, nil", applied, err)
		}
	})
}

func TestSchemaTooNew(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		db := b.newDB(t)
		st, err := b.openDB(t.Context(), db)
		if err != nil {
			t.Fatal(err)
		}
		support := len(coreMigrations(t, b))
		if _, err := st.DB().ExecContext(t.Context(),
			`INSERT INTO schema_migrations (track, version, name, applied_at) VALUES ('core', ?, 'from_the_future', 1)`, support+1); err != nil {
			t.Fatal(err)
		}
		st.Close()

		st, err = b.openDB(t.Context(), db)
		if err == nil {
			st.Close()
			t.Fatal("got a store, want the database refused")
		}
		var tooNew *store.SchemaTooNewError
		if !errors.As(err, &tooNew) {
			t.Fatalf("got %T %v, want *store.SchemaTooNewError", err, err)
		}
		if tooNew.Track != store.CoreTrack || tooNew.Have != support+1 || tooNew.Support != support {
			t.Errorf("got %+v, want track core, have %d, support %d", *tooNew, support+1, support)
		}
		for _, want := range []string{"newer attestationd", "run that version or restore a backup"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("got message %q, want it to say %q", err, want)
			}
		}
	})
}

func TestLoadMigrations(t *testing.T) {
	file := func(sql string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(sql)} }
	cases := []struct {
		name    string
		files   fstest.MapFS
		want    []string // version_name of each migration
		wantErr string
	}{
		{"in order", fstest.MapFS{
			"m/0002_add_index.sql":     file("CREATE INDEX i ON t (a);"),
			"m/0001_create_things.sql": file("CREATE TABLE t (a);"),
			"m/sub/0003_ignored.sql":   file("nope"),
		}, []string{"1_create_things", "2_add_index"}, ""},
		{"only a subdirectory", fstest.MapFS{"m/sub/0001_a.sql": file("")}, nil, ""},
		{"stray file", fstest.MapFS{"m/0001_a.sql": file(""), "m/README": file("")}, nil, "README: name must look like"},
		{"missing directory", fstest.MapFS{}, nil, "read migrations m"},
		{"no number", fstest.MapFS{"m/init.sql": file("")}, nil, "init.sql: name must look like 0001_create_things.sql"},
		{"short number", fstest.MapFS{"m/1_init.sql": file("")}, nil, "1_init.sql: name must look like"},
		{"dash", fstest.MapFS{"m/0001-init.sql": file("")}, nil, "0001-init.sql"},
		{"upper case", fstest.MapFS{"m/0001_Init.sql": file("")}, nil, "0001_Init.sql"},
		{"not SQL", fstest.MapFS{"m/0001_init.txt": file("")}, nil, "0001_init.txt"},
		{"gap", fstest.MapFS{
			"m/0001_a.sql": file(""),
			"m/0003_c.sql": file(""),
		}, nil, "want version 2, found 0003_c"},
		{"not from 1", fstest.MapFS{"m/0002_b.sql": file("")}, nil, "want version 1, found 0002_b"},
		{"duplicate version", fstest.MapFS{
			"m/0001_a.sql": file(""),
			"m/0001_b.sql": file(""),
		}, nil, "want version 2, found 0001_b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			migs, err := store.LoadMigrations(c.files, "m")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range migs {
				got = append(got, fmt.Sprintf("%d_%s", m.Version, m.Name))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
			if len(migs) > 0 && migs[0].SQL != "CREATE TABLE t (a);" {
				t.Errorf("got SQL %q, want the file's content", migs[0].SQL)
			}
		})
	}
}

func TestTracksMigrateIndependently(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		const track = "extension_demo"
		st := b.fresh(t)
		ctx := t.Context()
		v1 := []store.Migration{{Version: 1, Name: "create_things", SQL: `CREATE TABLE extension_demo_things (id TEXT PRIMARY KEY)`}}
		v2 := append(slices.Clone(v1), store.Migration{Version: 2, Name: "add_colour", SQL: `ALTER TABLE extension_demo_things ADD COLUMN colour TEXT`})
		core := len(coreMigrations(t, b))

		for _, step := range []struct {
			name        string
			migs        []store.Migration
			wantApplied int
			wantVersion int
		}{
			{"first", v1, 1, 1},
			{"again", v1, 0, 1},
			{"next", v2, 1, 2},
		} {
			applied, err := st.Migrate(ctx, track, step.migs)
			if err != nil || applied != step.wantApplied {
				t.Fatalf("%s: got %d applied, %v, want %d", step.name, applied, err, step.wantApplied)
			}
			if v, _ := st.SchemaVersion(ctx, track); v != step.wantVersion {
				t.Errorf("%s: got %s version %d, want %d", step.name, track, v, step.wantVersion)
			}
			if v, _ := st.SchemaVersion(ctx, store.CoreTrack); v != core {
				t.Errorf("%s: got core version %d, want %d (untouched)", step.name, v, core)
			}
		}
		if _, err := st.DB().ExecContext(ctx, `INSERT INTO extension_demo_things (id, colour) VALUES ('a', 'red')`); err != nil {
			t.Errorf("use the migrated table: %v", err)
		}
		var tooNew *store.SchemaTooNewError
		if _, err := st.Migrate(ctx, track, v1); !errors.As(err, &tooNew) || tooNew.Track != track {
			t.Errorf("migrate back to v1: got %v, want *SchemaTooNewError for %s", err, track)
		}
	})
}

func TestFailedMigrationRollsBack(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := t.Context()
		migs := []store.Migration{
			{Version: 1, Name: "ok", SQL: `CREATE TABLE extension_demo_a (id TEXT)`},
			{Version: 2, Name: "broken", SQL: `CREATE TABLE extension_demo_b (id TEXT); CREATE TABLE extension_demo_a (id TEXT);`},
		}
		applied, err := st.Migrate(ctx, "extension_demo", migs)
		if err == nil || !strings.Contains(err.Error(), "0002_broken") || applied != 1 {
			t.Fatalf("got %d applied, %v, want 1 and an error naming 0002_broken", applied, err)
		}
		if v, _ := st.SchemaVersion(ctx, "extension_demo"); v != 1 {
			t.Errorf("got version %d, want 1", v)
		}
		if slices.Contains(tables(t, st), "extension_demo_b") {
			t.Error("got table extension_demo_b from the failed migration, want it rolled back")
		}
	})
}

func TestUpdateRollsBack(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		errBoom := errors.New("boom")
		cases := []struct {
			name string
			fn   func(ctx context.Context, tx *store.Tx, existing *store.Machine) error
		}{
			{"insert and emit, then fail", func(ctx context.Context, tx *store.Tx, _ *store.Machine) error {
				m := &store.Machine{EKFingerprint: strings.Repeat("ab", 32), State: lifecycle.Registered}
				if err := tx.InsertMachine(ctx, m); err != nil {
					return err
				}
				if err := tx.Emit(ctx, m, &events.Registered{PreRegistered: true}); err != nil {
					return err
				}
				return errBoom
			}},
			{"update and emit, then fail", func(ctx context.Context, tx *store.Tx, m *store.Machine) error {
				m.State, m.DecommissionReason = lifecycle.Decommissioned, "half"
				if err := tx.UpdateMachine(ctx, m); err != nil {
					return err
				}
				if err := tx.Emit(ctx, m, &events.Decommissioned{Reason: "half"}); err != nil {
					return err
				}
				return errBoom
			}},
			{"emit, then fail on a duplicate EK", func(ctx context.Context, tx *store.Tx, m *store.Machine) error {
				if err := tx.Emit(ctx, m, &events.Online{}); err != nil {
					return err
				}
				if err := tx.InsertMachine(ctx, &store.Machine{EKFingerprint: m.EKFingerprint, State: lifecycle.Registered}); err != nil {
					return errors.Join(errBoom, err)
				}
				return nil
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				st := b.fresh(t)
				ctx := t.Context()
				var existing *store.Machine
				_, err := st.Update(ctx, func(tx *store.Tx) error {
					existing = &store.Machine{EKFingerprint: strings.Repeat("cd", 32), State: lifecycle.Registered}
					if err := tx.InsertMachine(ctx, existing); err != nil {
						return err
					}
					return tx.Emit(ctx, existing, &events.Registered{})
				})
				if err != nil {
					t.Fatal(err)
				}
				before, _ := st.ListMachines(ctx, store.MachineFilter{})
				beforeSeq, _ := st.LastEventSeq(ctx)

				copyOf := *existing
				evs, err := st.Update(ctx, func(tx *store.Tx) error { return c.fn(ctx, tx, &copyOf) })
				if !errors.Is(err, errBoom) || evs != nil {
					t.Fatalf("got %v, %v, want the function's error and no events", evs, err)
				}
				after, _ := st.ListMachines(ctx, store.MachineFilter{})
				if len(after) != len(before) || after[0].State != before[0].State || after[0].DecommissionReason != "" {
					t.Errorf("machines: got %+v, want %+v", after, before)
				}
				if seq, _ := st.LastEventSeq(ctx); seq != beforeSeq {
					t.Errorf("last event: got %d, want %d", seq, beforeSeq)
				}
				if all, _ := st.ListEvents(ctx, store.EventFilter{}); len(all) != 1 {
					t.Errorf("got %d events, want 1", len(all))
				}
			})
		}
	})
}

func TestForeignKeysEnforced(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		_, err := st.DB().ExecContext(t.Context(), `INSERT INTO events (id, type, machine_id, ek_fingerprint, created_at, payload)
		VALUES ('e', 'node.online', 'no-such-machine', '', 0, '{}')`)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "foreign key") {
			t.Errorf("event of an unknown machine: got %v, want a foreign key error", err)
		}
	})
}

// A panic inside Update must not leave the transaction open: the store
// has one writer connection, so every later write would wait forever.
func TestUpdatePanicReleasesWriter(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := t.Context()
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("got no panic, want the function's panic to propagate")
				}
			}()
			st.Update(ctx, func(tx *store.Tx) error {
				if err := tx.InsertMachine(ctx, &store.Machine{EKFingerprint: strings.Repeat("ab", 32), State: lifecycle.Registered}); err != nil {
					return err
				}
				panic("handler bug")
			})
		}()
		done := make(chan error, 1)
		go func() {
			_, err := st.Update(ctx, func(tx *store.Tx) error {
				return tx.InsertMachine(ctx, &store.Machine{EKFingerprint: strings.Repeat("cd", 32), State: lifecycle.Registered})
			})
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("write after the panic: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("write after the panic still waiting after 10s, want the writer released")
		}
		ms, err := st.ListMachines(ctx, store.MachineFilter{})
		if err != nil || len(ms) != 1 || ms[0].EKFingerprint != strings.Repeat("cd", 32) {
			t.Errorf("got %d machines (%v), want only the one written after the panic", len(ms), err)
		}
	})
}

func TestCursors(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := t.Context()
		emit := func() {
			t.Helper()
			_, err := st.Update(ctx, func(tx *store.Tx) error {
				m := &store.Machine{EKFingerprint: fmt.Sprintf("%064x", time.Now().UnixNano()), State: lifecycle.Registered}
				if err := tx.InsertMachine(ctx, m); err != nil {
					return err
				}
				return tx.Emit(ctx, m, &events.Registered{})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		emit()
		emit()
		steps := []struct {
			name string
			do   func() (int64, error)
			want int64
		}{
			{"new subscriber starts at the newest event", func() (int64, error) { return st.Cursor(ctx, "a") }, 2},
			{"cursor is kept", func() (int64, error) { emit(); return st.Cursor(ctx, "a") }, 2},
			{"advance", func() (int64, error) {
				if err := st.SetCursor(ctx, "a", 3); err != nil {
					return 0, err
				}
				return st.Cursor(ctx, "a")
			}, 3},
			{"never goes back", func() (int64, error) {
				if err := st.SetCursor(ctx, "a", 1); err != nil {
					return 0, err
				}
				return st.Cursor(ctx, "a")
			}, 3},
			{"another subscriber", func() (int64, error) { return st.Cursor(ctx, "b") }, 3},
		}
		for _, s := range steps {
			got, err := s.do()
			if err != nil || got != s.want {
				t.Errorf("%s: got %d, %v, want %d", s.name, got, err, s.want)
			}
		}
		all, err := st.Cursors(ctx)
		if err != nil || len(all) != 2 || all["a"] != 3 || all["b"] != 3 {
			t.Errorf("Cursors: got %v, %v, want a=3 b=3", all, err)
		}
		if err := st.RecordFailure(ctx, "a", 1, 3, errors.New("handler failed")); err != nil {
			t.Errorf("RecordFailure: %v", err)
		}
		if err := st.RecordFailure(ctx, "a", 1, 4, errors.New("handler failed again")); err != nil {
			t.Errorf("RecordFailure again: %v", err)
		}
	})
}

// Concurrent updates are group-committed, yet each commits or fails on
// its own: a failing update in a group undoes only its own writes.
func TestGroupCommitIsolation(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := b.fresh(t)
		const n = 200
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Update(ctx, func(tx *store.Tx) error {
					m := &store.Machine{EKFingerprint: fmt.Sprintf("%064x", i), State: lifecycle.Registered}
					if err := tx.InsertMachine(ctx, m); err != nil {
						return err
					}
					if err := tx.Emit(ctx, m, &events.Registered{}); err != nil {
						return err
					}
					if i%3 == 0 {
						return fmt.Errorf("update %d refuses", i)
					}
					return nil
				})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		failed := 0
		for err := range errs {
			if err != nil {
				failed++
			}
		}
		if want := (n + 2) / 3; failed != want {
			t.Fatalf("got %d failed updates, want %d", failed, want)
		}
		ms, err := s.ListMachines(ctx, store.MachineFilter{})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := s.ListEvents(ctx, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if want := n - failed; len(ms) != want || len(evs) != want {
			t.Fatalf("got %d machines and %d events, want %d of each", len(ms), len(evs), want)
		}
		for _, m := range ms {
			var i int
			fmt.Sscanf(m.EKFingerprint, "%x", &i)
			if i%3 == 0 {
				t.Errorf("machine %d was kept though its update failed", i)
			}
		}
	})
}

// TestUpdateOutlivesItsCaller checks that an update whose caller's context
// ends while it runs is not cut short: its statements run to the end and
// it commits as one, as the updates sharing its transaction do.
func TestUpdateOutlivesItsCaller(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		s := b.fresh(t)
		ctx, cancel := context.WithCancel(t.Context())
		_, err := s.Update(ctx, func(tx *store.Tx) error {
			cancel()
			m := &store.Machine{EKFingerprint: fmt.Sprintf("%064x", 1), State: lifecycle.Registered}
			if err := tx.InsertMachine(ctx, m); err != nil {
				return err
			}
			return tx.Emit(ctx, m, &events.Registered{})
		})
		if err != nil {
			t.Fatalf("Update: got %v, want nil", err)
		}
		ms, err := s.ListMachines(t.Context(), store.MachineFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 {
			t.Fatalf("got %d machines, want 1", len(ms))
		}
	})
}

// updateMachine reads the machine id, changes it with fn and writes it,
// in one transaction.
func updateMachine(t *testing.T, st *store.Store, id string, fn func(m *store.Machine)) {
	t.Helper()
	ctx := t.Context()
	if _, err := st.Update(ctx, func(tx *store.Tx) error {
		m, err := tx.MachineByID(ctx, id)
		if err != nil {
			return err
		}
		fn(m)
		return tx.UpdateMachine(ctx, m)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateMachineWritesWhatChanged: UpdateMachine writes the columns
// the caller changed since the read, so a change committed by another
// transaction meanwhile to another column stays; a Machine not read from
// the store is written whole, and one that does not exist is ErrNotFound.
func TestUpdateMachineWritesWhatChanged(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := t.Context()
		var id string
		if _, err := st.Update(ctx, func(tx *store.Tx) error {
			m := &store.Machine{EKFingerprint: strings.Repeat("ab", 32), State: lifecycle.Registered, Hostname: "a", Role: "r1", MACs: []string{"52:54:00:00:00:01"}}
			err := tx.InsertMachine(ctx, m)
			id = m.ID
			return err
		}); err != nil {
			t.Fatal(err)
		}
		stale, err := st.GetMachine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		updateMachine(t, st, id, func(m *store.Machine) { m.Role = "r2" })
		updateMachine(t, st, id, func(m *store.Machine) { m.Hostname, m.MACs = "b", append(m.MACs, "52:54:00:00:00:02") })
		// An update from a Machine read before the role changed writes its
		// own change, not the role it read.
		if _, err := st.Update(ctx, func(tx *store.Tx) error {
			stale.Serial = "SN-9"
			return tx.UpdateMachine(ctx, stale)
		}); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetMachine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Role != "r2" || got.Hostname != "b" || got.Serial != "SN-9" || len(got.MACs) != 2 || got.State != lifecycle.Registered {
			t.Errorf("machine after three updates: %+v", got)
		}
		// Not read from the store: written whole.
		if _, err := st.Update(ctx, func(tx *store.Tx) error {
			w := &store.Machine{ID: got.ID, EKFingerprint: got.EKFingerprint, State: got.State, RegisteredAt: got.RegisteredAt, Role: "r3"}
			return tx.UpdateMachine(ctx, w)
		}); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.GetMachine(ctx, id); got.Role != "r3" || got.Hostname != "" || got.Serial != "" {
			t.Errorf("a Machine not read from the store was not written whole: %+v", got)
		}
		_, err = st.Update(ctx, func(tx *store.Tx) error {
			return tx.UpdateMachine(ctx, &store.Machine{ID: "no-such-machine", State: lifecycle.Registered})
		})
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("update of a missing machine: %v, want ErrNotFound", err)
		}
	})
}
