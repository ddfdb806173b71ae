package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/internal/testenv"
)

// TestMigrationTracksMatch: both engines' core tracks have the same
// versions and names, so a migration added for one engine and not the
// other fails here.
func TestMigrationTracksMatch(t *testing.T) {
	var got [2][]string
	for i, dir := range []string{sqliteBackend.coreDir, postgresBackend.coreDir} {
		migs, err := store.LoadMigrations(os.DirFS("."), dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range migs {
			got[i] = append(got[i], fmt.Sprintf("%04d_%s", m.Version, m.Name))
		}
	}
	if len(got[0]) == 0 || !slices.Equal(got[0], got[1]) {
		t.Errorf("core migrations differ:\nSQLite     %v\nPostgreSQL %v", got[0], got[1])
	}
}

// TestPostgres checks what only PostgreSQL has: several processes on one
// database (migrating at once, writing at once, leading in turn), and
// the conflicts between them that make a group of updates run again.
func TestPostgres(t *testing.T) {
	testenv.Integration(t, "PostgreSQL: migrations, conflicts retried, two instances writing, leadership failover")
	b := postgresBackend
	t.Run("migrations from scratch, at once, then again", func(t *testing.T) {
		db := b.newDB(t)
		// Three processes starting on an empty database at once: one
		// migrates, the others wait for it and find nothing to do.
		stores := make([]*store.Store, 3)
		var wg sync.WaitGroup
		for i := range stores {
			wg.Go(func() {
				st, err := b.openDB(t.Context(), db)
				if err != nil {
					t.Errorf("open %d: %v", i, err)
					return
				}
				stores[i] = st
			})
		}
		wg.Wait()
		for _, st := range stores {
			if st != nil {
				defer st.Close()
			}
		}
		if t.Failed() {
			return
		}
		migs := coreMigrations(t, b)
		rows := migrationRows(t, stores[0])
		if len(rows) != len(migs) {
			t.Fatalf("got %d schema_migrations rows, want %d: %+v", len(rows), len(migs), rows)
		}
		for i, m := range migs {
			if r := rows[i]; r.Track != store.CoreTrack || r.Version != m.Version || r.Name != m.Name {
				t.Errorf("row %d: got %+v, want core %04d_%s", i, r, m.Version, m.Name)
			}
		}
		if applied, err := stores[1].Migrate(t.Context(), store.CoreTrack, migs); err != nil || applied != 0 {
			t.Errorf("Migrate(core) again: %d applied, %v; want 0, nil", applied, err)
		}
		if again := migrationRows(t, stores[2]); !slices.Equal(again, rows) {
			t.Errorf("rows changed: %+v, want %+v", again, rows)
		}
	})

	t.Run("a server that can lose commits is refused", func(t *testing.T) {
		db := b.newDB(t)
		st := b.open(t, db)
		if n, err := st.Synchronous(t.Context()); n != 2 || err != nil {
			t.Errorf("Synchronous = %d, %v; want 2 (each commit flushed)", n, err)
		}
		name := strings.TrimPrefix(strings.SplitN(db, "?", 2)[0], "postgres:///")
		if _, err := st.DB().ExecContext(t.Context(), `ALTER DATABASE `+name+` SET synchronous_commit = off`); err != nil {
			t.Fatal(err)
		}
		st2, err := b.openDB(t.Context(), db)
		if err == nil {
			st2.Close()
			t.Fatal("opened a database whose commits are acknowledged before they are durable")
		}
		if !strings.Contains(err.Error(), "synchronous_commit=off") {
			t.Errorf("got %v, want it to name synchronous_commit=off", err)
		}
	})

	t.Run("a conflicting group runs again, every change kept once", func(t *testing.T) {
		db := b.newDB(t)
		a, other := b.open(t, db), b.open(t, db)
		ctx := t.Context()
		shared := insertMachine(t, a, strings.Repeat("ee", 32))

		// The updates queue behind a plug, to run as one group. The first
		// run of update 0 reads the shared machine, then the other
		// instance changes it and commits: update 0's write conflicts,
		// and the whole group runs again.
		plugged, unplug := make(chan struct{}), make(chan struct{})
		go a.Update(ctx, func(*store.Tx) error {
			close(plugged)
			<-unplug
			return nil
		})
		<-plugged
		read, committed := make(chan struct{}), make(chan struct{})
		var runs [8]atomic.Int32
		var wg sync.WaitGroup
		evs := make([][]events.Envelope, len(runs))
		for i := range runs {
			wg.Go(func() {
				var err error
				evs[i], err = a.Update(ctx, func(tx *store.Tx) error {
					run := runs[i].Add(1)
					m := &store.Machine{EKFingerprint: fmt.Sprintf("%064x", i+1), State: lifecycle.Registered}
					if err := tx.InsertMachine(ctx, m); err != nil {
						return err
					}
					if err := tx.Emit(ctx, m, &events.Registered{}); err != nil {
						return err
					}
					if i != 0 {
						return nil
					}
					sm, err := tx.MachineByID(ctx, shared.ID)
					if err != nil {
						return err
					}
					if run == 1 {
						close(read)
						<-committed
					}
					sm.Hostname = "from-a"
					return tx.UpdateMachine(ctx, sm)
				})
				if err != nil {
					t.Errorf("update %d: %v", i, err)
				}
			})
		}
		time.Sleep(100 * time.Millisecond) // for the updates to queue
		close(unplug)
		<-read
		if _, err := other.Update(ctx, func(tx *store.Tx) error {
			sm, err := tx.MachineByID(ctx, shared.ID)
			if err != nil {
				return err
			}
			sm.Serial = "from-other"
			return tx.UpdateMachine(ctx, sm)
		}); err != nil {
			t.Fatal(err)
		}
		close(committed)
		wg.Wait()
		if runs[0].Load() < 2 {
			t.Fatalf("update 0 ran %d times, want it run again after the conflict", runs[0].Load())
		}
		for i := range runs {
			t.Logf("update %d ran %d times", i, runs[i].Load())
		}
		got, err := a.GetMachine(ctx, shared.ID)
		if err != nil || got.Hostname != "from-a" || got.Serial != "from-other" {
			t.Fatalf("shared machine %+v (%v): want both instances' changes", got, err)
		}
		listed, err := a.ListEvents(ctx, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		ms, _ := a.ListMachines(ctx, store.MachineFilter{})
		if len(ms) != len(runs)+1 || len(listed) != len(runs) {
			t.Fatalf("got %d machines and %d events, want %d and %d: each update's changes once", len(ms), len(listed), len(runs)+1, len(runs))
		}
		bySeq := map[int64]events.Envelope{}
		for _, e := range listed {
			bySeq[e.Seq] = e
		}
		for i, e := range evs {
			if len(e) != 1 || bySeq[e[0].Seq].ID != e[0].ID {
				t.Errorf("update %d returned events %+v, want the one committed", i, e)
			}
		}
	})

	t.Run("a deadlock's victim runs again", func(t *testing.T) {
		db := b.newDB(t)
		a, other := b.open(t, db), b.open(t, db)
		ctx := t.Context()
		m1 := insertMachine(t, a, strings.Repeat("01", 32))
		m2 := insertMachine(t, a, strings.Repeat("02", 32))
		set := func(tx *store.Tx, id, host string) error {
			m, err := tx.MachineByID(ctx, id)
			if err != nil {
				return err
			}
			m.Hostname = host
			return tx.UpdateMachine(ctx, m)
		}
		// a locks m1 then m2; the other locks m2 then m1, after a
		// waits: a is the one PostgreSQL picks (it waited first).
		aHas1, otherHas2 := make(chan struct{}), make(chan struct{})
		var runs atomic.Int32
		done := make(chan error, 1)
		go func() {
			_, err := a.Update(ctx, func(tx *store.Tx) error {
				first := runs.Add(1) == 1
				if err := set(tx, m1.ID, "a"); err != nil {
					return err
				}
				if first {
					close(aHas1)
					<-otherHas2
				}
				return set(tx, m2.ID, "a")
			})
			done <- err
		}()
		<-aHas1
		tx, err := other.DB().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `UPDATE machines SET serial = 'other' WHERE id = ?`, m2.ID); err != nil {
			t.Fatal(err)
		}
		close(otherHas2)
		time.Sleep(300 * time.Millisecond) // a waits for m2 first
		if _, err := tx.ExecContext(ctx, `UPDATE machines SET serial = 'other' WHERE id = ?`, m1.ID); err != nil {
			t.Fatalf("the other transaction: %v, want a to be the deadlock's victim", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("a's update: %v, want it run again and committed", err)
		}
		if runs.Load() < 2 {
			t.Fatalf("a's update ran %d times, want at least 2", runs.Load())
		}
		for _, m := range []*store.Machine{m1, m2} {
			got, err := a.GetMachine(ctx, m.ID)
			if err != nil || got.Hostname != "a" || got.Serial != "other" {
				t.Errorf("machine %s: %+v (%v), want both writers' changes", m.EKFingerprint[:2], got, err)
			}
		}
	})

	t.Run("two instances write at once, nothing lost, events in commit order", func(t *testing.T) {
		db := b.newDB(t)
		a, other := b.open(t, db), b.open(t, db)
		ctx := t.Context()
		counter := insertMachine(t, a, strings.Repeat("cc", 32))
		const perInstance = 60
		// A subscriber reading the log as it grows must see every event:
		// none may commit behind one it has already read.
		seen := map[int64]bool{}
		var after int64
		read := func() {
			evs, err := other.EventsAfter(ctx, after, 1000)
			if err != nil {
				t.Error(err)
				return
			}
			for _, e := range evs {
				seen[e.Seq] = true
				after = e.Seq
			}
		}
		stop := make(chan struct{})
		reader := make(chan struct{})
		go func() {
			defer close(reader)
			for {
				select {
				case <-stop:
					return
				default:
					read()
				}
			}
		}()
		var wg sync.WaitGroup
		for _, st := range []*store.Store{a, other} {
			for range perInstance {
				wg.Go(func() {
					_, err := st.Update(ctx, func(tx *store.Tx) error {
						m, err := tx.MachineByID(ctx, counter.ID)
						if err != nil {
							return err
						}
						n, _ := strconv.Atoi(m.Serial)
						m.Serial = strconv.Itoa(n + 1)
						if err := tx.UpdateMachine(ctx, m); err != nil {
							return err
						}
						return tx.Emit(ctx, m, &events.Online{})
					})
					if err != nil {
						t.Errorf("update: %v", err)
					}
				})
			}
		}
		wg.Wait()
		close(stop)
		<-reader
		read()
		got, err := a.GetMachine(ctx, counter.ID)
		if err != nil || got.Serial != strconv.Itoa(2*perInstance) {
			t.Fatalf("counter %q (%v), want %d: an increment was lost", got.Serial, err, 2*perInstance)
		}
		all, err := a.ListEvents(ctx, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2*perInstance {
			t.Fatalf("got %d events, want %d", len(all), 2*perInstance)
		}
		for _, e := range all {
			if !seen[e.Seq] {
				t.Errorf("event %d committed behind one the reader had read: it was never seen", e.Seq)
			}
		}
	})

	t.Run("leadership passes on release and on a broken connection", func(t *testing.T) {
		db := b.newDB(t)
		a, other := b.open(t, db), b.open(t, db)
		ctx := t.Context()
		la, err := a.Lead(ctx, "sweeper")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := other.TryLead(ctx, "sweeper"); ok || err != nil {
			t.Fatalf("TryLead while a leads: %v, %v; want false", ok, err)
		}
		if lo, ok, err := other.TryLead(ctx, "dhcp"); !ok || err != nil {
			t.Fatalf("TryLead of another name: %v, %v; want true", ok, err)
		} else {
			lo.Release()
		}
		// other waits for the lease; a's session is ended as a killed
		// process's would be.
		got := make(chan *store.Lease, 1)
		go func() {
			l, err := other.Lead(ctx, "sweeper")
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		select {
		case <-got:
			t.Fatal("other leads while a does")
		case <-time.After(1500 * time.Millisecond):
		}
		start := time.Now()
		res, err := other.DB().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
		if n, _ := res.RowsAffected(); err != nil || n != 1 {
			t.Fatalf("end a's session: %d sessions (%v), want 1", n, err)
		}
		var lo *store.Lease
		select {
		case lo = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("other does not lead 10s after a's session ended")
		}
		took := time.Since(start)
		select {
		case <-la.Lost():
		case <-time.After(5 * time.Second):
			t.Fatal("a's lease not lost 5s after its session ended")
		}
		lost := time.Since(start)
		la.Release()
		testenv.Note(t, "leadership taken over %s after the leader's session ended; the leader noticed after %s",
			took.Round(10*time.Millisecond), lost.Round(10*time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("takeover took %s, want a few seconds at most", took)
		}

		// Released: a takes it back as soon as it tries.
		if _, ok, _ := a.TryLead(ctx, "sweeper"); ok {
			t.Fatal("a leads again while other does")
		}
		lo.Release()
		select {
		case <-lo.Lost():
		default:
			t.Error("Lost is not closed after Release")
		}
		la2, ok, err := a.TryLead(ctx, "sweeper")
		if !ok || err != nil {
			t.Fatalf("TryLead after the release: %v, %v; want true", ok, err)
		}
		// Closing the store lets the lease go too.
		a.Close()
		select {
		case <-la2.Lost():
		default:
			t.Error("Lost is not closed after the store closed")
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		l3, err := other.Lead(lctx, "sweeper")
		if err != nil {
			t.Fatalf("Lead after a closed: %v", err)
		}
		l3.Release()
	})
}

// TestLeadSQLite: one process owns an SQLite database, so a lease is
// taken at once and never lost, but two leases of one name in the
// process still take turns.
func TestLeadSQLite(t *testing.T) {
	st := sqliteBackend.fresh(t)
	ctx := t.Context()
	l, err := st.Lead(ctx, "sweeper")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := st.TryLead(ctx, "sweeper"); ok || err != nil {
		t.Fatalf("second TryLead: %v, %v; want false", ok, err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := st.Lead(short, "sweeper"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lead: %v, want it to wait until its context ends", err)
	}
	select {
	case <-l.Lost():
		t.Fatal("lost a lease nobody released")
	default:
	}
	l.Release()
	<-l.Lost()
	l2, ok, err := st.TryLead(ctx, "sweeper")
	if !ok || err != nil {
		t.Fatalf("TryLead after the release: %v, %v; want true", ok, err)
	}
	l2.Release()
	l2.Release() // twice is fine
}

func insertMachine(t *testing.T, st *store.Store, ek string) *store.Machine {
	t.Helper()
	m := &store.Machine{EKFingerprint: ek, State: lifecycle.Registered}
	if _, err := st.Update(t.Context(), func(tx *store.Tx) error { return tx.InsertMachine(t.Context(), m) }); err != nil {
		t.Fatal(err)
	}
	return m
}
