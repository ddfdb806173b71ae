package extensions

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/events"
)

type fake struct{ info Info }

func (f fake) Info() Info { return f.info }

func mustPanic(t *testing.T, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		p := recover()
		if p == nil {
			t.Fatalf("no panic; want one mentioning %q", want)
		}
		if !strings.Contains(p.(string), want) {
			t.Fatalf("panic %q; want one mentioning %q", p, want)
		}
	}()
	fn()
}

func TestRegister(t *testing.T) {
	Register(fake{Info{Name: "reg_b", Version: "1.0.0", Description: "b"}})
	Register(fake{Info{Name: "reg_a", Version: "0.1.0-rc.1", Description: "a"}})
	var names []string
	for _, e := range All() {
		if strings.HasPrefix(e.Info().Name, "reg_") {
			names = append(names, e.Info().Name)
		}
	}
	if got, want := strings.Join(names, ","), "reg_a,reg_b"; got != want {
		t.Errorf("All() names = %s, want %s (sorted)", got, want)
	}

	tests := []struct {
		name string
		ext  Extension
		want string
	}{
		{"nil", nil, "nil extension"},
		{"empty name", fake{Info{Name: "", Version: "1.0.0", Description: "x"}}, "not snake_case"},
		{"camel case", fake{Info{Name: "ipPool", Version: "1.0.0", Description: "x"}}, "not snake_case"},
		{"dash", fake{Info{Name: "ip-pool", Version: "1.0.0", Description: "x"}}, "not snake_case"},
		{"double underscore", fake{Info{Name: "ip__pool", Version: "1.0.0", Description: "x"}}, "not snake_case"},
		{"leading v", fake{Info{Name: "badver", Version: "v1.0.0", Description: "x"}}, "not semantic"},
		{"two parts", fake{Info{Name: "badver", Version: "1.0", Description: "x"}}, "not semantic"},
		{"no description", fake{Info{Name: "nodesc", Version: "1.0.0"}}, "description"},
		{"duplicate", fake{Info{Name: "reg_a", Version: "2.0.0", Description: "again"}}, "twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mustPanic(t, tc.want, func() { Register(tc.ext) })
		})
	}
}

func TestCheckMigration(t *testing.T) {
	tests := []struct {
		name, sql string
		wantErr   string
	}{
		{"table and index", `CREATE TABLE extension_tags_tags (id TEXT PRIMARY KEY);
			CREATE INDEX extension_tags_by_machine ON extension_tags_tags (id);`, ""},
		{"if not exists and quotes", `CREATE TABLE IF NOT EXISTS "extension_tags_x" (a INT);
			CREATE UNIQUE INDEX IF NOT EXISTS extension_tags_u ON "extension_tags_x"(a);`, ""},
		{"comment mentioning a table", "-- CREATE TABLE machines\nCREATE TABLE extension_tags_t (a INT);", ""},
		{"core table", `CREATE TABLE machines2 (a INT);`, `table "machines2"`},
		{"other extension", `CREATE TABLE extension_webhook_t (a INT);`, "extension_tags_"},
		{"prefix without underscore", `CREATE TABLE extension_tagsx (a INT);`, "extension_tags_"},
		{"index on core table", `CREATE INDEX extension_tags_i ON machines (role);`, `on table "machines"`},
		{"trigger on core table", `CREATE TRIGGER extension_tags_t AFTER INSERT ON machines BEGIN SELECT 1; END;`, `on table "machines"`},
		{"view", `CREATE VIEW v AS SELECT 1;`, `view "v"`},
		{"alter core", `ALTER TABLE machines ADD COLUMN x INT;`, `table "machines"`},
		{"drop core", `DROP TABLE IF EXISTS events;`, `table "events"`},
		{"schema qualified", `CREATE TABLE main.machines_x (a INT);`, `"machines_x"`},
		{"lower case keywords", `create table extension_tags_ok (a int); create index bad on extension_tags_ok(a);`, `index "bad"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckMigration("tags", tc.sql)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error mentioning %s", err, tc.wantErr)
			}
		})
	}
}

func TestHandlersTyped(t *testing.T) {
	h := NewHandlers("demo")
	var gotReg events.Registered
	var gotAny []events.Type
	var gotRaw []int64
	h.OnRegistered(func(_ context.Context, ev events.Registered) error { gotReg = ev; return nil })
	h.OnRegistered(func(context.Context, events.Registered) error { return nil })
	h.OnDecommissioned(func(context.Context, events.Decommissioned) error { return nil })
	h.OnAny(func(_ context.Context, ev events.Event) error { gotAny = append(gotAny, events.TypeOf(ev)); return nil })
	h.Subscribe("audit", []events.Type{events.TypeOnline, events.TypeRegistered}, func(_ context.Context, env events.Envelope) error {
		gotRaw = append(gotRaw, env.Seq)
		return nil
	})

	var names []string
	for _, s := range h.Subscriptions() {
		names = append(names, s.Name)
	}
	want := "demo.node.registered,demo.node.registered.2,demo.node.decommissioned,demo.any,demo.raw.audit"
	if got := strings.Join(names, ","); got != want {
		t.Fatalf("subscription names = %s, want %s", got, want)
	}

	payload, _ := json.Marshal(events.Registered{IP: "10.0.0.7", TPMAvailable: true, Hardware: events.Hardware{Serial: "S1"}})
	env := events.Envelope{Seq: 7, ID: "e7", Type: events.TypeRegistered, MachineID: "m1", EKFingerprint: "fp", Time: time.Unix(10, 0).UTC(), Payload: payload}
	for _, s := range h.Subscriptions() {
		if len(s.Types) > 0 && !contains(s.Types, env.Type) {
			continue
		}
		if err := s.Handle(context.Background(), env); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
	}
	if gotReg.IP != "10.0.0.7" || gotReg.Hardware.Serial != "S1" || gotReg.MachineID != "m1" || gotReg.Seq != 7 || gotReg.Event != events.TypeRegistered {
		t.Errorf("typed handler got %+v", gotReg)
	}
	if len(gotAny) != 1 || gotAny[0] != events.TypeRegistered {
		t.Errorf("any handler got %v", gotAny)
	}
	if len(gotRaw) != 1 || gotRaw[0] != 7 {
		t.Errorf("raw handler got %v", gotRaw)
	}
	if ts := h.Subscriptions()[2].Types; len(ts) != 1 || ts[0] != events.TypeDecommissioned {
		t.Errorf("OnDecommissioned subscribes to %v", ts)
	}
}

func contains(ts []events.Type, t events.Type) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}
