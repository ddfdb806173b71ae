package cli_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
)

type auditJSON struct {
	ID    string `json:"id"` // int64 is a string in protojson
	Time  string `json:"time"`
	Actor struct {
		Subject string `json:"subject"`
		Name    string `json:"name"`
	} `json:"actor"`
	Action    string `json:"action"`
	MachineID string `json:"machine_id"`
	RequestID string `json:"request_id"`
	Result    string `json:"result"`
	Detail    string `json:"detail"`
}

// TestAuditList approves, changes the role of, revokes and reinstates a
// machine with the CLI, has one action refused, and reads the trail back
// with audit list: as a table, as JSON, filtered and limited.
func TestAuditList(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{})
	ok, raw := cliFor(t, d)
	m := attested(t, d, ok, "audited")
	other := register(t, ok, "other")
	ok("machines", "approve", m.ID, "--role", "worker", "--hostname", "node-1")
	ok("machines", "set-role", m.ID, "db")
	if r := raw("machines", "set-role", m.ID, "Not A Role"); r.code != 1 {
		t.Fatalf("set-role with an invalid role: exit %d, want 1", r.code)
	}
	ok("machines", "revoke", m.ID, "--reason", "disk replaced")
	ok("machines", "reinstate", m.ID)

	all := decode[[]auditJSON](t, "audit list -o json", ok("audit", "list", "-o", "json"))
	var got []string
	for _, r := range all {
		if r.Actor.Subject != "admin-token" || r.Actor.Name != "admin-token" || r.RequestID == "" || r.Time == "" {
			t.Errorf("record %+v: want the admin as actor, a request ID and a time", r)
		}
		result, _, _ := strings.Cut(r.Result, ":")
		got = append(got, r.Action+" "+r.MachineID+" "+result)
	}
	want := []string{
		"machine.register " + m.ID + " ok",
		"machine.register " + other.ID + " ok",
		"machine.approve " + m.ID + " ok",
		"machine.set_role " + m.ID + " ok",
		"machine.set_role " + m.ID + " invalid_argument",
		"machine.revoke " + m.ID + " ok",
		"machine.reinstate " + m.ID + " ok",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit list:\ngot  %q\nwant %q", got, want)
	}
	if all[5].Detail != `reason="disk replaced"` {
		t.Errorf("revocation detail: got %q", all[5].Detail)
	}

	t.Run("table", func(t *testing.T) {
		out := ok("audit", "list", "--machine", m.ID, "--action", "machine.revoke")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("got %d lines, want a header and one record:\n%s", len(lines), out)
		}
		for _, col := range []string{"TIME", "ACTOR", "ACTION", "MACHINE", "REQUEST", "RESULT", "DETAIL"} {
			if !strings.Contains(lines[0], col) {
				t.Errorf("header %q: missing column %s", lines[0], col)
			}
		}
		for _, cell := range []string{"admin-token", "machine.revoke", m.ID, all[5].RequestID, "ok", `reason="disk replaced"`} {
			if !strings.Contains(lines[1], cell) {
				t.Errorf("row %q: missing %s", lines[1], cell)
			}
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want int
		}{
			{[]string{"--machine", other.ID}, 1},
			{[]string{"--action", "machine.set_role"}, 2},
			{[]string{"--actor", "admin-token", "--since", "1h"}, 7},
			{[]string{"--actor", "nobody"}, 0},
			{[]string{"--since", "2d"}, 7},
			{[]string{"--limit", "3"}, 3},
		} {
			args := append([]string{"audit", "list", "-o", "json"}, c.args...)
			if got := decode[[]auditJSON](t, strings.Join(args, " "), ok(args...)); len(got) != c.want {
				t.Errorf("audit list %s: got %d records, want %d", strings.Join(c.args, " "), len(got), c.want)
			}
		}
	})

	t.Run("empty", func(t *testing.T) {
		r := raw("audit", "list", "--actor", "nobody")
		if r.code != 0 || !strings.Contains(r.stdout, "ACTION") || !strings.Contains(r.stderr, "no audit records") {
			t.Errorf("got exit %d, stdout %q, stderr %q; want the header and 'no audit records' on stderr", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{{"--since", "yesterday"}, {"--limit", "-1"}, {"--machine", "node-1"}} {
			r := raw(append([]string{"audit", "list"}, args...)...)
			if r.code != 1 || r.stderr == "" {
				t.Errorf("audit list %s: exit %d, stderr %q; want an error", strings.Join(args, " "), r.code, r.stderr)
			}
		}
	})

	t.Run("events name the actor", func(t *testing.T) {
		type event struct {
			Type  string `json:"type"`
			Actor *struct {
				Name string `json:"name"`
			} `json:"actor"`
		}
		var got []string
		for _, ev := range decode[[]event](t, "events list", ok("events", "list", "--machine", m.ID, "-o", "json")) {
			name := "-"
			if ev.Actor != nil {
				name = ev.Actor.Name
			}
			got = append(got, ev.Type+":"+name)
		}
		// Attested by the agent's side; the rest is the admin's doing.
		want := "node.registered:admin-token node.online:- node.provisioned:admin-token node.role_changed:admin-token " +
			"node.decommissioned:admin-token node.registered:admin-token"
		if strings.Join(got, " ") != want {
			t.Errorf("events:\ngot  %s\nwant %s", strings.Join(got, " "), want)
		}
		table := ok("events", "list", "--machine", m.ID)
		if lines := strings.Split(table, "\n"); !strings.Contains(lines[0], "ACTOR") || !strings.Contains(lines[2], " - ") ||
			!strings.Contains(lines[3], "admin-token") {
			t.Errorf("events table: want an ACTOR column, - for the agent's event and admin-token for the approval:\n%s", table)
		}
	})
}

// TestAuditActionCompletion: --action completes the core's actions, as
// the daemon names them (audit.Actions).
func TestAuditActionCompletion(t *testing.T) {
	r := runCLI(t, environ{}, "__complete", "audit", "list", "--action", "")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if !strings.HasPrefix(line, ":") { // the last line is the directive
			got = append(got, line)
		}
	}
	if want := audit.Actions(); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
