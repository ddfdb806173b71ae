package machines_test

import (
	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
)

// TestOperatorActionsAreAudited: each operation an operator asks for
// writes its record in the transaction of its change, and its events name
// the operator; a refused one writes nothing here (the API records
// refusals), nor does the agent's attestation.
func TestOperatorActionsAreAudited(t *testing.T) {
	e := newEnv(t)
	carol := audit.Actor{Subject: "c4r0l", Name: "carol"}
	ctx := audit.WithActor(audit.WithRequestID(t.Context(), "req-1"), carol)

	m, err := e.svc.Register(ctx, machines.Registration{EKFingerprint: strings.ToUpper(e.fingerprint()), Role: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Attested(t.Context(), m.ID); err != nil { // the agent's
		t.Fatal(err)
	}
	if _, err := e.svc.Approve(ctx, m.ID, machines.Approval{Hostname: "node-1", SchematicID: strings.Repeat("0f", 32)}); err == nil {
		t.Fatal("approve with an unknown schematic: got nil error")
	}
	if _, err := e.svc.Approve(ctx, m.ID, machines.Approval{Hostname: "node-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetRole(ctx, m.ID, "worker"); err != nil { // no change, still asked for
		t.Fatal(err)
	}
	if _, err := e.svc.Reinstate(ctx, m.ID); err == nil {
		t.Fatal("reinstate a provisioned machine: got nil error")
	}
	if _, err := e.svc.Revoke(ctx, m.ID, "  retired  "); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Reinstate(ctx, m.ID); err != nil {
		t.Fatal(err)
	}

	recs, err := e.st.ListAuditRecords(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		if r.Actor != carol || r.RequestID != "req-1" || r.MachineID != m.ID || r.Result != audit.ResultOK {
			t.Errorf("record %+v: want carol's ok record of %s in req-1", r, m.ID)
		}
		got = append(got, r.Action+" "+r.Detail)
	}
	want := []string{
		"machine.register ek_fingerprint=" + m.EKFingerprint + " role=worker",
		"machine.approve role=worker hostname=node-1",
		"machine.set_role role=worker",
		"machine.revoke reason=retired",
		"machine.reinstate ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\ngot  %q\nwant %q", got, want)
	}

	var actors []string
	for _, ev := range e.events(t, m.ID) {
		name := "-"
		if ev.Actor != nil {
			name = ev.Actor.Name
		}
		actors = append(actors, string(ev.Type)+":"+name)
	}
	if got, want := strings.Join(actors, " "), "node.registered:carol node.online:- node.provisioned:carol node.decommissioned:carol node.registered:carol"; got != want {
		t.Errorf("events:\ngot  %s\nwant %s", got, want)
	}
}
