package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

var alice = audit.Actor{Subject: "3f2a", Name: "alice"}

// TestAuditCommitsWithTheChange runs concurrent updates (group-committed)
// that each insert a machine, emit its event and write its audit record,
// a third of them then failing: exactly the kept updates have their
// record, and their events name the actor.
func TestAuditCommitsWithTheChange(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		const n = 60
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				ctx := audit.WithActor(audit.WithRequestID(context.Background(), fmt.Sprintf("req-%d", i)), alice)
				_, err := st.Update(ctx, func(tx *store.Tx) error {
					m := &store.Machine{EKFingerprint: fmt.Sprintf("%064x", i), State: lifecycle.Registered}
					if err := tx.InsertMachine(ctx, m); err != nil {
						return err
					}
					if err := tx.Emit(ctx, m, &events.Registered{PreRegistered: true}); err != nil {
						return err
					}
					if err := tx.Audit(ctx, audit.Record{Action: audit.MachineRegister, MachineID: m.ID}); err != nil {
						return err
					}
					if i%3 == 0 {
						return errors.New("refused after writing")
					}
					return nil
				})
				if (err != nil) != (i%3 == 0) {
					t.Errorf("update %d: got %v", i, err)
				}
			})
		}
		wg.Wait()
		ctx := t.Context()
		recs, err := st.ListAuditRecords(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		ms, _ := st.ListMachines(ctx, store.MachineFilter{})
		if want := n - n/3; len(recs) != want || len(ms) != want {
			t.Fatalf("got %d records and %d machines, want %d of each", len(recs), len(ms), want)
		}
		kept := map[string]bool{}
		for _, m := range ms {
			kept[m.ID] = true
		}
		for _, r := range recs {
			var i int
			fmt.Sscanf(r.RequestID, "req-%d", &i)
			if !kept[r.MachineID] || i%3 == 0 || r.Actor != alice || r.Result != audit.ResultOK || r.Time.IsZero() {
				t.Errorf("record %+v: want alice's ok record of a kept machine", r)
			}
		}
		evs, _ := st.ListEvents(ctx, store.EventFilter{})
		for _, e := range evs {
			ev, err := e.Decode()
			if err != nil {
				t.Fatal(err)
			}
			if e.Actor == nil || *e.Actor != alice || ev.Header().Actor == nil || *ev.Header().Actor != alice {
				t.Errorf("event %d: actor %v, payload's %v, want alice", e.Seq, e.Actor, ev.Header().Actor)
			}
			if !strings.Contains(string(e.Payload), `"actor":{"subject":"3f2a","name":"alice"}`) {
				t.Errorf("event %d: payload %s, want alice as its actor", e.Seq, e.Payload)
			}
		}
	})
}

// TestAuditWithoutActor: a change no operator asked for (an agent's, the
// sweeper's) writes no record, and its events have no actor.
func TestAuditWithoutActor(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		ctx := audit.WithRequestID(t.Context(), "agent-call")
		if _, err := st.Update(ctx, func(tx *store.Tx) error {
			m := &store.Machine{EKFingerprint: strings.Repeat("ab", 32), State: lifecycle.Registered}
			if err := tx.InsertMachine(ctx, m); err != nil {
				return err
			}
			if err := tx.Emit(ctx, m, &events.Registered{}); err != nil {
				return err
			}
			return tx.Audit(ctx, audit.Record{Action: audit.MachineRegister, MachineID: m.ID})
		}); err != nil {
			t.Fatal(err)
		}
		if recs, _ := st.ListAuditRecords(t.Context(), store.AuditFilter{}); len(recs) != 0 {
			t.Errorf("got records %+v, want none", recs)
		}
		evs, _ := st.ListEvents(t.Context(), store.EventFilter{})
		if len(evs) != 1 || evs[0].Actor != nil || strings.Contains(string(evs[0].Payload), "actor") {
			t.Errorf("got events %+v, want one without an actor", evs)
		}
	})
}

// TestAuditFilterAndTruncate: the filters of ListAuditRecords, and a long
// result kept to a bounded, valid UTF-8 size.
func TestAuditFilterAndTruncate(t *testing.T) {
	forEachEngine(t, func(t *testing.T, b backend) {
		st := b.fresh(t)
		bob := audit.Actor{Subject: "b0b", Name: "bob"}
		write := func(a audit.Actor, action, machine, result string) {
			t.Helper()
			ctx := audit.WithActor(t.Context(), a)
			if _, err := st.Update(ctx, func(tx *store.Tx) error {
				return tx.Audit(ctx, audit.Record{Action: action, MachineID: machine, Result: result})
			}); err != nil {
				t.Fatal(err)
			}
		}
		write(alice, audit.MachineApprove, "m1", "")
		write(bob, audit.MachineRevoke, "m1", "")
		write(bob, audit.ConfigSet, "", "invalid_argument: "+strings.Repeat("é", 2000))
		for _, c := range []struct {
			name string
			f    store.AuditFilter
			want string
		}{
			{"all", store.AuditFilter{}, "machine.approve machine.revoke config.set"},
			{"by machine", store.AuditFilter{MachineID: "m1"}, "machine.approve machine.revoke"},
			{"by subject", store.AuditFilter{Actor: "b0b"}, "machine.revoke config.set"},
			{"by name", store.AuditFilter{Actor: "alice"}, "machine.approve"},
			{"by action", store.AuditFilter{Action: audit.ConfigSet}, "config.set"},
			{"after the first", store.AuditFilter{AfterID: 1, Limit: 1}, "machine.revoke"},
		} {
			recs, err := st.ListAuditRecords(t.Context(), c.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range recs {
				got = append(got, r.Action)
			}
			if strings.Join(got, " ") != c.want {
				t.Errorf("%s: got %v, want %s", c.name, got, c.want)
			}
		}
		recs, _ := st.ListAuditRecords(t.Context(), store.AuditFilter{Action: audit.ConfigSet})
		if r := recs[0].Result; len(r) > 1024 || !utf8.ValidString(r) || !strings.HasSuffix(r, "…") || recs[0].MachineID != "" {
			t.Errorf("long result: got %d bytes (valid UTF-8 %v) ending %q, machine %q; want at most 1024, cut with …, no machine",
				len(r), utf8.ValidString(r), r[len(r)-8:], recs[0].MachineID)
		}
	})
}
