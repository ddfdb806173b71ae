package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

func TestMachineByMACAndUUID(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		st := b.fresh(t)
		old := time.Now().Add(-time.Hour)
		for _, m := range []*store.Machine{
			{EKFingerprint: strings.Repeat("01", 32), State: lifecycle.Decommissioned, MACs: []string{"52:54:00:00:00:01"}, RegisteredAt: old},
			{EKFingerprint: strings.Repeat("02", 32), State: lifecycle.Attested, MACs: []string{"52:54:00:00:00:02", "52:54:00:00:00:01"}, SMBIOSUUID: "4c4c4544-0000-0000-0000-000000000002"},
			{EKFingerprint: strings.Repeat("03", 32), State: lifecycle.Registered, MACs: []string{"52:54:00:00:00:0a"}, SMBIOSUUID: "4C4C4544-0000-0000-0000-000000000003"},
			{EKFingerprint: strings.Repeat("04", 32), State: lifecycle.Registered, MACs: []string{"52:54:00:00:00:1_"}},
		} {
			if _, err := st.Update(ctx, func(tx *store.Tx) error { return tx.InsertMachine(ctx, m) }); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			name, mac, uuid, wantEK string
		}{
			{name: "one MAC", mac: "52:54:00:00:00:02", wantEK: "02"},
			{name: "newest of two", mac: "52:54:00:00:00:01", wantEK: "02"},
			{name: "upper-case query", mac: "52:54:00:00:00:0A", wantEK: "03"},
			{name: "LIKE wildcards are literal", mac: "52:54:00:00:00:1a"},
			{name: "_ in the query is literal", mac: "52:54:00:00:00:0_"},
			{name: "% in the query is literal", mac: "52:54:00:00:00:%"},
			{name: "% alone", mac: "%"},
			{name: "prefix does not match", mac: "52:54:00:00:00:0"},
			{name: "unknown", mac: "52:54:00:00:00:ff"},
			{name: "uuid", uuid: "4C4C4544-0000-0000-0000-000000000002", wantEK: "02"},
			{name: "uuid stored upper-case", uuid: "4c4c4544-0000-0000-0000-000000000003", wantEK: "03"},
			{name: "empty uuid", uuid: ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				var (
					m   *store.Machine
					err error
				)
				if c.mac != "" {
					m, err = st.MachineByMAC(ctx, c.mac)
				} else {
					m, err = st.MachineBySMBIOSUUID(ctx, c.uuid)
				}
				if c.wantEK == "" {
					if !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("got %v, %v, want ErrNotFound", m, err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if want := strings.Repeat(c.wantEK, 32); m.EKFingerprint != want {
					t.Errorf("got machine %s, want %s", m.EKFingerprint, want)
				}
			})
		}
	})
}

// wantMACs checks what MachineByMAC finds for each MAC: the machine of
// the given ID, or nothing ("").
func wantMACs(t *testing.T, st *store.Store, want map[string]string) {
	t.Helper()
	for mac, id := range want {
		m, err := st.MachineByMAC(t.Context(), mac)
		switch {
		case id == "" && !errors.Is(err, store.ErrNotFound):
			t.Errorf("MachineByMAC(%s): got %v, %v, want ErrNotFound", mac, m, err)
		case id != "" && err != nil:
			t.Errorf("MachineByMAC(%s): %v, want machine %s", mac, err, id)
		case id != "" && m.ID != id:
			t.Errorf("MachineByMAC(%s): got machine %s, want %s", mac, m.ID, id)
		}
	}
}

// TestMachineByMACFollowsUpdates: the MACs an update writes are found, the
// ones it drops are not, and the newest machine (then the greatest ID)
// that reported a MAC wins, also when the newer one drops it or the
// registration times change.
func TestMachineByMACFollowsUpdates(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := t.Context()
		at := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
		insert := func(m *store.Machine) {
			t.Helper()
			if _, err := st.Update(ctx, func(tx *store.Tx) error { return tx.InsertMachine(ctx, m) }); err != nil {
				t.Fatal(err)
			}
		}
		insert(&store.Machine{ID: "a", EKFingerprint: strings.Repeat("0a", 32), State: lifecycle.Registered,
			MACs: []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:01"}, RegisteredAt: at})
		insert(&store.Machine{ID: "b", EKFingerprint: strings.Repeat("0b", 32), State: lifecycle.Registered,
			MACs: []string{"52:54:00:00:00:02"}, RegisteredAt: at.Add(time.Minute)})
		insert(&store.Machine{ID: "c", EKFingerprint: strings.Repeat("0c", 32), State: lifecycle.Registered})
		wantMACs(t, st, map[string]string{"52:54:00:00:00:01": "a", "52:54:00:00:00:02": "b"})

		updateMachine(t, st, "a", func(m *store.Machine) { m.MACs = []string{"52:54:00:00:00:03"} })
		wantMACs(t, st, map[string]string{"52:54:00:00:00:01": "", "52:54:00:00:00:02": "b", "52:54:00:00:00:03": "a"})

		// The newer machine drops the MAC: the older one is found again.
		updateMachine(t, st, "a", func(m *store.Machine) { m.MACs = append(m.MACs, "52:54:00:00:00:02") })
		updateMachine(t, st, "b", func(m *store.Machine) { m.MACs = nil })
		wantMACs(t, st, map[string]string{"52:54:00:00:00:02": "a"})

		// Registered at the same time: the greater ID wins.
		updateMachine(t, st, "c", func(m *store.Machine) { m.MACs, m.RegisteredAt = []string{"52:54:00:00:00:02"}, at })
		wantMACs(t, st, map[string]string{"52:54:00:00:00:02": "c"})
		updateMachine(t, st, "a", func(m *store.Machine) { m.RegisteredAt = at.Add(time.Hour) })
		wantMACs(t, st, map[string]string{"52:54:00:00:00:02": "a", "52:54:00:00:00:03": "a"})

		// An update of other columns leaves the MACs as they are, and
		// one of a Machine not read from the store writes them whole.
		updateMachine(t, st, "a", func(m *store.Machine) { m.Hostname = "a" })
		wantMACs(t, st, map[string]string{"52:54:00:00:00:02": "a", "52:54:00:00:00:03": "a"})
		if _, err := st.Update(ctx, func(tx *store.Tx) error {
			return tx.UpdateMachine(ctx, &store.Machine{ID: "a", EKFingerprint: strings.Repeat("0a", 32), State: lifecycle.Registered,
				MACs: []string{"52:54:00:00:00:04"}, RegisteredAt: at.Add(time.Hour)})
		}); err != nil {
			t.Fatal(err)
		}
		wantMACs(t, st, map[string]string{"52:54:00:00:00:02": "c", "52:54:00:00:00:03": "", "52:54:00:00:00:04": "a"})

		// An update that rolls back leaves the MACs as they were.
		errRollback := errors.New("roll back")
		if _, err := st.Update(ctx, func(tx *store.Tx) error {
			m, err := tx.MachineByID(ctx, "a")
			if err != nil {
				return err
			}
			m.MACs = []string{"52:54:00:00:00:05"}
			if err := tx.UpdateMachine(ctx, m); err != nil {
				return err
			}
			return errRollback
		}); !errors.Is(err, errRollback) {
			t.Fatalf("update: %v, want %v", err, errRollback)
		}
		wantMACs(t, st, map[string]string{"52:54:00:00:00:04": "a", "52:54:00:00:00:05": ""})
	})
}

// TestMachineMACsMigration: migration 0012 indexes the MACs of the
// machines a database at 0011 holds.
func TestMachineMACsMigration(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		db := b.newDB(t)
		st, err := b.openDB(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-time.Hour)
		for _, m := range []*store.Machine{
			{ID: "a", EKFingerprint: strings.Repeat("0a", 32), MACs: []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:01"}, RegisteredAt: at},
			{ID: "b", EKFingerprint: strings.Repeat("0b", 32), MACs: []string{"52:54:00:00:00:02"}, RegisteredAt: at.Add(time.Minute)},
			{ID: "c", EKFingerprint: strings.Repeat("0c", 32), MACs: []string{"52:54:00:00:00:03"}, RegisteredAt: at},
			{ID: "d", EKFingerprint: strings.Repeat("0d", 32), MACs: []string{"52:54:00:00:00:03"}, RegisteredAt: at},
			{ID: "e", EKFingerprint: strings.Repeat("0e", 32)},
		} {
			m.State = lifecycle.Registered
			if _, err := st.Update(ctx, func(tx *store.Tx) error { return tx.InsertMachine(ctx, m) }); err != nil {
				t.Fatal(err)
			}
		}
		// Back to 0011: the machines without their index.
		if _, err := st.DB().ExecContext(ctx, `DROP TABLE machine_macs`); err != nil {
			t.Fatal(err)
		}
		if _, err := st.DB().ExecContext(ctx, `DELETE FROM schema_migrations WHERE track = ? AND version = 12`, store.CoreTrack); err != nil {
			t.Fatal(err)
		}
		st.Close()
		st = b.open(t, db)
		if v, err := st.SchemaVersion(ctx, store.CoreTrack); err != nil || v < 12 {
			t.Fatalf("core schema version %d (%v) after reopening, want 12 or more", v, err)
		}
		wantMACs(t, st, map[string]string{
			"52:54:00:00:00:01": "a", "52:54:00:00:00:02": "b", "52:54:00:00:00:03": "d", "52:54:00:00:00:04": "",
		})
	})
}
