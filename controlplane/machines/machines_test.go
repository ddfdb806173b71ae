package machines_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// unknownID is a well-formed machine ID that no machine has.
const unknownID = "0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a"

// env is a Service on a temporary store that records what it reports
// as committed.
type env struct {
	st  *store.Store
	svc *machines.Service

	mu        sync.Mutex
	committed []events.Envelope
	n         int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// The schematics the tests approve with (their IDs stand for content
	// the tests do not need).
	if _, err := st.Update(t.Context(), func(tx *store.Tx) error {
		for _, id := range []string{strings.Repeat("ab", 32), strings.Repeat("cd", 32), strings.Repeat("ef", 32)} {
			if _, err := tx.PutSchematic(t.Context(), &store.Schematic{ID: id, Document: []byte("{}")}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e := &env{st: st}
	e.svc = machines.New(st, func(evs []events.Envelope) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.committed = append(e.committed, evs...)
	})
	return e
}

// fingerprint returns a new valid EK fingerprint on every call.
func (e *env) fingerprint() string {
	e.n++
	return fmt.Sprintf("%064x", e.n)
}

// events returns the stored events of machine id.
func (e *env) events(t *testing.T, id string) []events.Envelope {
	t.Helper()
	evs, err := e.st.ListEvents(t.Context(), store.EventFilter{MachineID: id})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (e *env) lastSeq(t *testing.T) int64 {
	t.Helper()
	seq, err := e.st.LastEventSeq(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func (e *env) get(t *testing.T, id string) *store.Machine {
	t.Helper()
	m, err := e.svc.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// inState returns a new machine in state st, pre-registered with reg.
func (e *env) inState(t *testing.T, st lifecycle.State, reg machines.Registration) *store.Machine {
	t.Helper()
	ctx := t.Context()
	if reg.EKFingerprint == "" {
		reg.EKFingerprint = e.fingerprint()
	}
	m, err := e.svc.Register(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	switch st {
	case lifecycle.Registered:
	case lifecycle.Attested:
		m, err = e.svc.Attested(ctx, m.ID)
	case lifecycle.Provisioned:
		if m, err = e.svc.Attested(ctx, m.ID); err == nil && m.State != lifecycle.Provisioned {
			m, err = e.svc.Approve(ctx, m.ID, machines.Approval{Role: "worker", Hostname: "node"})
		}
	case lifecycle.Decommissioned:
		m, err = e.svc.Revoke(ctx, m.ID, "retired")
	}
	if err != nil {
		t.Fatal(err)
	}
	if m.State != st {
		t.Fatalf("set up: got state %s, want %s", m.State, st)
	}
	return m
}

func types(evs []events.Envelope) string {
	var ts []string
	for _, e := range evs {
		ts = append(ts, string(e.Type))
	}
	return strings.Join(ts, " ")
}

func decode[E events.Event](t *testing.T, env events.Envelope) E {
	t.Helper()
	ev, err := env.Decode()
	if err != nil {
		t.Fatal(err)
	}
	typed, ok := ev.(E)
	if !ok {
		t.Fatalf("got %T, want %T", ev, typed)
	}
	return typed
}

func TestRegister(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	fp := e.fingerprint()
	m, err := e.svc.Register(ctx, machines.Registration{
		EKFingerprint: strings.ToUpper(fp),
		MACs:          []string{"52-54-00-AB-CD-EF", "52:54:00:ab:cd:ef", "52:54:00:00:00:01"},
		Role:          "worker",
		Hostname:      "node-1",
		SchematicID:   strings.Repeat("AB", 32),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ field, got, want string }{
		{"ek_fingerprint", m.EKFingerprint, fp},
		{"state", string(m.State), "registered"},
		{"macs", strings.Join(m.MACs, ","), "52:54:00:ab:cd:ef,52:54:00:00:00:01"},
		{"role", m.Role, "worker"},
		{"hostname", m.Hostname, "node-1"},
		{"schematic_id", m.SchematicID, strings.Repeat("ab", 32)},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	if !m.PreRegistered || m.RegisteredAt.IsZero() || !m.ApprovedAt.IsZero() || !m.FirstSeenAt.IsZero() {
		t.Errorf("got pre_registered %v registered_at %v approved_at %v first_seen_at %v, want true, set, unset, unset",
			m.PreRegistered, m.RegisteredAt, m.ApprovedAt, m.FirstSeenAt)
	}
	stored := e.get(t, m.ID)
	if fmt.Sprint(*stored) != fmt.Sprint(*m) {
		t.Errorf("stored: got %+v, want %+v", *stored, *m)
	}
	evs := e.events(t, m.ID)
	if got := types(evs); got != "node.registered" {
		t.Fatalf("events: got %s, want node.registered", got)
	}
	reg := decode[*events.Registered](t, evs[0])
	if !reg.PreRegistered || reg.Reinstated || reg.MAC != "52:54:00:ab:cd:ef" || reg.Role != "worker" || reg.Hostname != "node-1" ||
		!slices.Equal(reg.Hardware.MACs, m.MACs) || reg.EKFingerprint != fp || reg.MachineID != m.ID {
		t.Errorf("payload: got %+v, want pre-registered, first MAC, role, hostname, all MACs", reg)
	}
	if len(e.committed) != 1 || e.committed[0].ID != evs[0].ID {
		t.Errorf("committed callback: got %+v, want the one event", e.committed)
	}

	dec := e.inState(t, lifecycle.Decommissioned, machines.Registration{})
	cases := []struct {
		name     string
		fp       string
		existing *store.Machine
		contains string
	}{
		{"same EK", fp, m, "already exists"},
		{"same EK in upper case", strings.ToUpper(fp), m, "already exists"},
		{"decommissioned EK", dec.EKFingerprint, dec, "reinstate it instead"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.lastSeq(t)
			_, err := e.svc.Register(ctx, machines.Registration{EKFingerprint: c.fp, Role: "db"})
			var exists *machines.ExistsError
			if !errors.As(err, &exists) {
				t.Fatalf("got %v, want *machines.ExistsError", err)
			}
			if exists.ID != c.existing.ID || exists.State != c.existing.State {
				t.Errorf("got %+v, want ID %s state %s", *exists, c.existing.ID, c.existing.State)
			}
			if !strings.Contains(err.Error(), c.contains) || !strings.Contains(err.Error(), c.existing.ID) {
				t.Errorf("got message %q, want it to name %s and say %q", err, c.existing.ID, c.contains)
			}
			if got := e.get(t, c.existing.ID); got.Role != c.existing.Role {
				t.Errorf("role: got %q, want %q unchanged", got.Role, c.existing.Role)
			}
			if seq := e.lastSeq(t); seq != before {
				t.Errorf("last event: got %d, want %d (nothing emitted)", seq, before)
			}
		})
	}
}

func TestApprove(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := e.inState(t, lifecycle.Attested, machines.Registration{SchematicID: strings.Repeat("cd", 32)})
	got, err := e.svc.Approve(ctx, m.ID, machines.Approval{Role: "db", Hostname: "db-1", SchematicID: strings.Repeat("EF", 32)})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != lifecycle.Provisioned || got.Role != "db" || got.Hostname != "db-1" ||
		got.SchematicID != strings.Repeat("ef", 32) || got.ApprovedAt.IsZero() {
		t.Errorf("got %+v, want provisioned db db-1 with the new schematic and approved_at", *got)
	}
	evs := e.events(t, m.ID)
	if got := types(evs); got != "node.registered node.online node.provisioned" {
		t.Fatalf("events: got %s", got)
	}
	prov := decode[*events.Provisioned](t, evs[2])
	if prov.Role != "db" || prov.Hostname != "db-1" || prov.SchematicID != strings.Repeat("ef", 32) {
		t.Errorf("payload: got %+v, want db db-1 and the schematic", prov)
	}
}

// TestIllegal tries every operation where the lifecycle forbids it: a
// *lifecycle.TransitionError naming the state, and nothing changes.
func TestIllegal(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	approve := func(id string) error {
		_, err := e.svc.Approve(ctx, id, machines.Approval{Role: "db", Hostname: "db-1"})
		return err
	}
	cases := []struct {
		state lifecycle.State
		op    string
		do    func(id string) error
	}{
		{lifecycle.Registered, "approve", approve},
		{lifecycle.Provisioned, "approve", approve},
		{lifecycle.Decommissioned, "approve", approve},
		{lifecycle.Decommissioned, "revoke", func(id string) error { _, err := e.svc.Revoke(ctx, id, "again"); return err }},
		{lifecycle.Decommissioned, "set role", func(id string) error { _, err := e.svc.SetRole(ctx, id, "db"); return err }},
		{lifecycle.Decommissioned, "attest", func(id string) error { _, err := e.svc.Attested(ctx, id); return err }},
		{lifecycle.Registered, "reinstate", func(id string) error { _, err := e.svc.Reinstate(ctx, id); return err }},
		{lifecycle.Attested, "reinstate", func(id string) error { _, err := e.svc.Reinstate(ctx, id); return err }},
		{lifecycle.Provisioned, "reinstate", func(id string) error { _, err := e.svc.Reinstate(ctx, id); return err }},
	}
	for _, c := range cases {
		t.Run(c.op+" "+string(c.state), func(t *testing.T) {
			m := e.inState(t, c.state, machines.Registration{})
			before, seq := e.get(t, m.ID), e.lastSeq(t)
			err := c.do(m.ID)
			var te *lifecycle.TransitionError
			if !errors.As(err, &te) || te.From != c.state {
				t.Fatalf("got %v, want a *lifecycle.TransitionError from %s", err, c.state)
			}
			if !strings.Contains(err.Error(), string(c.state)) || !strings.Contains(err.Error(), m.ID) {
				t.Errorf("got message %q, want it to name the machine and its state", err)
			}
			if after := e.get(t, m.ID); fmt.Sprint(*after) != fmt.Sprint(*before) {
				t.Errorf("machine: got %+v, want %+v", *after, *before)
			}
			if got := e.lastSeq(t); got != seq {
				t.Errorf("last event: got %d, want %d", got, seq)
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	e := newEnv(t)
	for _, st := range []lifecycle.State{lifecycle.Registered, lifecycle.Attested, lifecycle.Provisioned} {
		t.Run(string(st), func(t *testing.T) {
			m := e.inState(t, st, machines.Registration{})
			got, err := e.svc.Revoke(t.Context(), m.ID, "\tdisk failed  ")
			if err != nil {
				t.Fatal(err)
			}
			if got.State != lifecycle.Decommissioned || got.DecommissionReason != "disk failed" || got.DecommissionedAt.IsZero() {
				t.Errorf("got state %s reason %q at %v, want decommissioned, \"disk failed\", set", got.State, got.DecommissionReason, got.DecommissionedAt)
			}
			evs := e.events(t, m.ID)
			dec := decode[*events.Decommissioned](t, evs[len(evs)-1])
			if dec.Reason != "disk failed" || dec.Role != m.Role || dec.Hostname != m.Hostname {
				t.Errorf("payload: got %+v, want the reason, role and hostname", dec)
			}
		})
	}
}

func TestSetRole(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	cases := []struct {
		name      string
		state     lifecycle.State
		from, to  string
		wantEvent bool
	}{
		{"registered", lifecycle.Registered, "worker", "db", true},
		{"attested without a role", lifecycle.Attested, "", "db", true},
		{"provisioned", lifecycle.Provisioned, "worker", "db", true},
		{"same role", lifecycle.Provisioned, "worker", "worker", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := e.inState(t, c.state, machines.Registration{Role: c.from})
			before, seq := e.get(t, m.ID), e.lastSeq(t)
			got, err := e.svc.SetRole(ctx, m.ID, c.to)
			if err != nil {
				t.Fatal(err)
			}
			if got.Role != c.to || got.State != c.state {
				t.Errorf("got role %q state %s, want %q %s", got.Role, got.State, c.to, c.state)
			}
			after := e.get(t, m.ID)
			if after.Role != c.to {
				t.Errorf("stored role: got %q, want %q", after.Role, c.to)
			}
			if !c.wantEvent {
				if e.lastSeq(t) != seq || !after.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("got a write (last event %d, updated_at %v), want none (%d, %v)", e.lastSeq(t), after.UpdatedAt, seq, before.UpdatedAt)
				}
				return
			}
			evs := e.events(t, m.ID)
			rc := decode[*events.RoleChanged](t, evs[len(evs)-1])
			if rc.OldRole != c.from || rc.NewRole != c.to {
				t.Errorf("payload: got %s -> %s, want %s -> %s", rc.OldRole, rc.NewRole, c.from, c.to)
			}
		})
	}
}

func TestReinstate(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := e.inState(t, lifecycle.Provisioned, machines.Registration{MACs: []string{"52:54:00:00:00:07"}})
	if _, err := e.svc.Revoke(ctx, m.ID, "stolen"); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Reinstate(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != lifecycle.Registered || got.DecommissionReason != "" || !got.DecommissionedAt.IsZero() || !got.ApprovedAt.IsZero() {
		t.Errorf("got %+v, want registered with the decommission and approval cleared", *got)
	}
	stored := e.get(t, m.ID)
	if stored.DecommissionReason != "" || !stored.DecommissionedAt.IsZero() || stored.State != lifecycle.Registered {
		t.Errorf("stored: got %+v, want the decommission cleared", *stored)
	}
	evs := e.events(t, m.ID)
	if got := types(evs); got != "node.registered node.online node.provisioned node.decommissioned node.registered" {
		t.Fatalf("events: got %s", got)
	}
	reg := decode[*events.Registered](t, evs[4])
	if !reg.Reinstated || reg.MAC != "52:54:00:00:00:07" {
		t.Errorf("payload: got %+v, want reinstated with the MAC", reg)
	}
	// Back through the lifecycle: it must attest again; pre-registered, it
	// keeps its role and hostname and is approved as it attests.
	got, err = e.svc.Attested(ctx, m.ID)
	if err != nil || got.State != lifecycle.Provisioned || got.Role != "worker" || got.Hostname != "node" {
		t.Fatalf("attest after reinstating: got %v, %v, want provisioned as worker node", got, err)
	}
	if got := types(e.events(t, m.ID)); !strings.HasSuffix(got, "node.registered node.online node.provisioned") {
		t.Errorf("events: got %s, want it approved again", got)
	}
}

// A machine that enrolled by itself (not pre-registered) and is
// reinstated waits for an operator's approval again, which defaults to
// the role and hostname it had.
func TestReinstateSelfRegistered(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m, _, err := e.svc.SelfRegister(ctx, machines.SelfRegistration{EKFingerprint: e.fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Attested(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Approve(ctx, m.ID, machines.Approval{Role: "db", Hostname: "db-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Revoke(ctx, m.ID, "audit"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Reinstate(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Attested(ctx, m.ID)
	if err != nil || got.State != lifecycle.Attested {
		t.Fatalf("attest after reinstating: got %v, %v, want attested", got, err)
	}
	got, err = e.svc.Approve(ctx, m.ID, machines.Approval{})
	if err != nil || got.State != lifecycle.Provisioned || got.Role != "db" || got.Hostname != "db-1" {
		t.Fatalf("approve without role or hostname: got %v, %v, want provisioned as db db-1", got, err)
	}
}

func TestApproveDefaults(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, tt := range []struct {
		name           string
		reg            machines.Registration
		approval       machines.Approval
		role, hostname string
		missing        string
	}{
		{"both given", machines.Registration{}, machines.Approval{Role: "worker", Hostname: "n1"}, "worker", "n1", ""},
		{"role from the machine", machines.Registration{Role: "storage"}, machines.Approval{Hostname: "n2"}, "storage", "n2", ""},
		{"a given role wins", machines.Registration{Role: "storage"}, machines.Approval{Role: "db", Hostname: "n3"}, "db", "n3", ""},
		{"no role anywhere", machines.Registration{}, machines.Approval{Hostname: "n4"}, "", "", "role"},
		{"no hostname anywhere", machines.Registration{Role: "db"}, machines.Approval{}, "", "", "hostname"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := e.inState(t, lifecycle.Attested, tt.reg)
			got, err := e.svc.Approve(ctx, m.ID, tt.approval)
			if tt.missing != "" {
				var me *machines.MissingError
				if !errors.As(err, &me) || me.Field != tt.missing {
					t.Fatalf("got %v, want a *MissingError for %s", err, tt.missing)
				}
				if stored := e.get(t, m.ID); stored.State != lifecycle.Attested {
					t.Errorf("stored state %s, want attested (nothing changed)", stored.State)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Role != tt.role || got.Hostname != tt.hostname {
				t.Errorf("got %s %s, want %s %s", got.Role, got.Hostname, tt.role, tt.hostname)
			}
		})
	}
}

// Revoking a decommissioned machine says so, with when and why.
func TestRevokeDecommissioned(t *testing.T) {
	e := newEnv(t)
	m := e.inState(t, lifecycle.Decommissioned, machines.Registration{})
	_, err := e.svc.Revoke(t.Context(), m.ID, "again")
	var te *lifecycle.TransitionError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "already decommissioned") || !strings.Contains(err.Error(), "(retired)") {
		t.Fatalf("got %v, want a transition error saying it is already decommissioned and why", err)
	}
	if strings.Contains(err.Error(), "reinstate it first") {
		t.Errorf("%v: a revoke needs no reinstatement", err)
	}
}

func TestAttested(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	cases := []struct {
		name   string
		state  lifecycle.State
		reg    machines.Registration
		want   lifecycle.State
		events string
	}{
		{"registered", lifecycle.Registered, machines.Registration{}, lifecycle.Attested, "node.online"},
		{"pre-registered with role and hostname", lifecycle.Registered,
			machines.Registration{Role: "worker", Hostname: "node-1", SchematicID: strings.Repeat("ab", 32)},
			lifecycle.Provisioned, "node.online node.provisioned"},
		{"pre-registered with a role only", lifecycle.Registered, machines.Registration{Role: "worker"}, lifecycle.Attested, "node.online"},
		{"attested again", lifecycle.Attested, machines.Registration{}, lifecycle.Attested, "node.online"},
		{"provisioned re-attests", lifecycle.Provisioned, machines.Registration{}, lifecycle.Provisioned, "node.online"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := e.inState(t, c.state, c.reg)
			seq := e.lastSeq(t)
			got, err := e.svc.Attested(ctx, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != c.want || got.FirstSeenAt.IsZero() {
				t.Errorf("got state %s first_seen %v, want %s, set", got.State, got.FirstSeenAt, c.want)
			}
			if !m.FirstSeenAt.IsZero() && !got.FirstSeenAt.Equal(m.FirstSeenAt) {
				t.Errorf("first_seen: got %v, want %v kept", got.FirstSeenAt, m.FirstSeenAt)
			}
			evs, err := e.st.ListEvents(ctx, store.EventFilter{MachineID: m.ID, AfterSeq: seq})
			if err != nil {
				t.Fatal(err)
			}
			if got := types(evs); got != c.events {
				t.Fatalf("events: got %s, want %s", got, c.events)
			}
			online := decode[*events.Online](t, evs[0])
			if !online.FirstSeen.Equal(got.FirstSeenAt) {
				t.Errorf("online first_seen: got %v, want %v", online.FirstSeen, got.FirstSeenAt)
			}
			if c.want == lifecycle.Provisioned && c.state == lifecycle.Registered {
				prov := decode[*events.Provisioned](t, evs[1])
				if prov.Role != c.reg.Role || prov.Hostname != c.reg.Hostname || prov.SchematicID != c.reg.SchematicID || got.ApprovedAt.IsZero() {
					t.Errorf("auto-approval: got %+v approved_at %v, want the pre-registered role, hostname, schematic", prov, got.ApprovedAt)
				}
			}
		})
	}
}

// TestUpperCaseID: a machine ID in upper case names the same machine.
func TestUpperCaseID(t *testing.T) {
	e := newEnv(t)
	m := e.inState(t, lifecycle.Attested, machines.Registration{})
	if got, err := e.svc.Get(t.Context(), strings.ToUpper(m.ID)); err != nil || got.ID != m.ID {
		t.Errorf("Get: got %v, %v, want machine %s", got, err, m.ID)
	}
	got, err := e.svc.Approve(t.Context(), strings.ToUpper(m.ID), machines.Approval{Role: "db", Hostname: "db-1"})
	if err != nil || got.ID != m.ID || got.State != lifecycle.Provisioned {
		t.Errorf("Approve: got %v, %v, want machine %s provisioned", got, err, m.ID)
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ops := []struct {
		name string
		do   func() error
	}{
		{"get", func() error { _, err := e.svc.Get(ctx, unknownID); return err }},
		{"approve", func() error {
			_, err := e.svc.Approve(ctx, unknownID, machines.Approval{Role: "db", Hostname: "db-1"})
			return err
		}},
		{"revoke", func() error { _, err := e.svc.Revoke(ctx, unknownID, "x"); return err }},
		{"set role", func() error { _, err := e.svc.SetRole(ctx, unknownID, "db"); return err }},
		{"reinstate", func() error { _, err := e.svc.Reinstate(ctx, unknownID); return err }},
		{"attested", func() error { _, err := e.svc.Attested(ctx, unknownID); return err }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			err := op.do()
			if !errors.Is(err, machines.ErrNotFound) || !strings.Contains(err.Error(), unknownID) {
				t.Errorf("got %v, want machines.ErrNotFound naming %s", err, unknownID)
			}
		})
	}
	if seq := e.lastSeq(t); seq != 0 {
		t.Errorf("last event: got %d, want 0", seq)
	}
}

// TestCanceled: a canceled context writes nothing and says so.
func TestCanceled(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := e.svc.Register(ctx, machines.Registration{EKFingerprint: e.fingerprint()})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if ms, _ := e.st.ListMachines(t.Context(), store.MachineFilter{}); len(ms) != 0 {
		t.Errorf("got %d machines, want none", len(ms))
	}
}

// An approval or pre-registration naming a schematic that is not stored
// is refused and changes nothing.
func TestUnknownSchematic(t *testing.T) {
	e := newEnv(t)
	unknown := strings.Repeat("01", 32)
	_, err := e.svc.Register(t.Context(), machines.Registration{EKFingerprint: e.fingerprint(), SchematicID: unknown})
	var se *machines.UnknownSchematicError
	if !errors.As(err, &se) || se.ID != unknown {
		t.Fatalf("pre-register with an unknown schematic: %v, want *UnknownSchematicError", err)
	}
	m := e.inState(t, lifecycle.Attested, machines.Registration{})
	if _, err := e.svc.Approve(t.Context(), m.ID, machines.Approval{Role: "db", Hostname: "db-1", SchematicID: unknown}); !errors.As(err, &se) {
		t.Fatalf("approve with an unknown schematic: %v, want *UnknownSchematicError", err)
	}
	got, err := e.st.GetMachine(t.Context(), m.ID)
	if err != nil || got.State != lifecycle.Attested || got.Role != "" {
		t.Errorf("after the refused approval: %+v, %v; want it attested as before", got, err)
	}
}

// A role's default schematic goes to machines approved with the role and
// no schematic of their own; one given at approval wins.
func TestRoleDefaultSchematic(t *testing.T) {
	e := newEnv(t)
	def, own := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	if _, err := e.st.Update(t.Context(), func(tx *store.Tx) error {
		return tx.PutConfigTemplate(t.Context(), &store.ConfigTemplate{Role: "worker", Template: "x", SchematicID: def})
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, role, schematic, want string
	}{
		{"the role's default", "worker", "", def},
		{"its own", "worker", own, own},
		{"a role without a template", "db", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := e.inState(t, lifecycle.Attested, machines.Registration{})
			got, err := e.svc.Approve(t.Context(), m.ID, machines.Approval{Role: tt.role, Hostname: "n", SchematicID: tt.schematic})
			if err != nil {
				t.Fatal(err)
			}
			if got.SchematicID != tt.want {
				t.Errorf("schematic %q, want %q", got.SchematicID, tt.want)
			}
			evs := e.events(t, m.ID)
			ev, err := evs[len(evs)-1].Decode()
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := ev.(*events.Provisioned); !ok || p.SchematicID != tt.want {
				t.Errorf("node.provisioned %+v, want schematic_id %q", ev, tt.want)
			}
		})
	}
}
