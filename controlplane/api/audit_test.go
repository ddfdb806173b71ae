package api_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/auth/authtest"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/extensions/tags"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// auditEnv is a daemon and Connect clients of it that authenticate with
// authorization and send X-Request-Id when one is given.
type auditEnv struct {
	*env
	machines attestationv1connect.MachineServiceClient
	audit    attestationv1connect.AuditServiceClient
	events   attestationv1connect.EventServiceClient
}

func newAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	e := newEnv(t)
	return &auditEnv{
		env:      e,
		machines: attestationv1connect.NewMachineServiceClient(http.DefaultClient, e.d.URL),
		audit:    attestationv1connect.NewAuditServiceClient(http.DefaultClient, e.d.URL),
		events:   attestationv1connect.NewEventServiceClient(http.DefaultClient, e.d.URL),
	}
}

// request returns msg as a request authenticated as authorization, with
// requestID as its X-Request-Id unless it is "".
func request[T any](msg *T, authorization, requestID string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", authorization)
	if requestID != "" {
		req.Header().Set("X-Request-Id", requestID)
	}
	return req
}

// admin returns msg as a request of the admin.
func admin[T any](msg *T) *connect.Request[T] { return request(msg, bearer(daemontest.Token), "") }

// requestID is the X-Request-Id a call was answered with, error or not.
func requestID(h http.Header, err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Meta().Get("X-Request-Id")
	}
	return h.Get("X-Request-Id")
}

// records lists the audit trail as the admin, following every page.
func (e *auditEnv) records(t *testing.T, req *attestationv1.ListAuditRecordsRequest) []*attestationv1.AuditRecord {
	t.Helper()
	var all []*attestationv1.AuditRecord
	for {
		resp, err := e.audit.ListAuditRecords(t.Context(), admin(req))
		if err != nil {
			t.Fatalf("ListAuditRecords(%v): %v", req, err)
		}
		all = append(all, resp.Msg.Records...)
		if resp.Msg.NextPageToken == "" {
			return all
		}
		req.PageToken = resp.Msg.NextPageToken
	}
}

// line is what a test compares of a record.
func line(r *attestationv1.AuditRecord) string {
	return fmt.Sprintf("%s %s %s %s [%s]", r.GetActor().GetSubject(), r.Action, r.MachineId, r.Result, r.Detail)
}

// TestAuditTrail drives the lifecycle through the API as the admin, with
// refusals in between, and reads the trail back: every action with its
// actor, machine, request ID, result and detail, in commit order; the
// events the actions wrote name the actor, the agent's do not.
func TestAuditTrail(t *testing.T) {
	e := newAuditEnv(t)
	ctx := t.Context()

	reg, err := e.machines.RegisterMachine(ctx, request(&attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(1)},
		bearer(daemontest.Token), "change-4711"))
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.Header().Get("X-Request-Id"); got != "change-4711" {
		t.Errorf("register: X-Request-Id %q, want the caller's change-4711", got)
	}
	id := reg.Msg.Machine.Id
	e.attest(t, id) // the agent's doing: no record

	var ids []string // the request IDs of the calls below, in order
	note := func(h http.Header, err error) {
		t.Helper()
		got := requestID(h, err)
		if _, perr := uuid.Parse(got); perr != nil {
			t.Errorf("X-Request-Id %q: want a generated UUID", got)
		}
		ids = append(ids, got)
	}
	appr, err := e.machines.ApproveMachine(ctx, admin(&attestationv1.ApproveMachineRequest{Id: id, Role: "worker", Hostname: "node-1"}))
	if err != nil {
		t.Fatal(err)
	}
	note(appr.Header(), nil)
	// Refused: an unknown machine, an invalid role, a machine in the
	// wrong state. A malformed X-Request-Id is replaced.
	unknown := uuid.NewString()
	_, err = e.machines.ApproveMachine(ctx, request(&attestationv1.ApproveMachineRequest{Id: unknown, Role: "worker", Hostname: "x"},
		bearer(daemontest.Token), "not a request id"))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("approve an unknown machine: got %v, want not_found", err)
	}
	note(nil, err)
	_, err = e.machines.SetMachineRole(ctx, admin(&attestationv1.SetMachineRoleRequest{Id: id, Role: "Bad Role"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("set an invalid role: got %v, want invalid_argument", err)
	}
	note(nil, err)
	role, err := e.machines.SetMachineRole(ctx, admin(&attestationv1.SetMachineRoleRequest{Id: id, Role: "db"}))
	if err != nil {
		t.Fatal(err)
	}
	note(role.Header(), nil)
	rev, err := e.machines.RevokeMachine(ctx, admin(&attestationv1.RevokeMachineRequest{Id: id, Reason: "disk replaced"}))
	if err != nil {
		t.Fatal(err)
	}
	note(rev.Header(), nil)
	_, err = e.machines.ApproveMachine(ctx, admin(&attestationv1.ApproveMachineRequest{Id: id}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("approve a decommissioned machine: got %v, want failed_precondition", err)
	}
	note(nil, err)
	rein, err := e.machines.ReinstateMachine(ctx, admin(&attestationv1.ReinstateMachineRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	note(rein.Header(), nil)
	// Reads are not recorded.
	if _, err := e.machines.GetMachine(ctx, admin(&attestationv1.GetMachineRequest{Id: id})); err != nil {
		t.Fatal(err)
	}

	recs := e.records(t, &attestationv1.ListAuditRecordsRequest{})
	want := []string{
		"admin-token machine.register " + id + " ok [ek_fingerprint=" + fingerprint(1) + "]",
		"admin-token machine.approve " + id + " ok [role=worker hostname=node-1]",
		"admin-token machine.approve " + unknown + " not_found: approve machine " + unknown + ": machine not found [role=worker hostname=x]",
		"admin-token machine.set_role " + id + ` invalid_argument: validation error: role: "Bad Role" is not a role: want lower-case letters, digits, hyphens or underscores, starting with a letter, at most 63 characters, like worker [role="Bad Role"]`,
		"admin-token machine.set_role " + id + " ok [role=db]",
		"admin-token machine.revoke " + id + ` ok [reason="disk replaced"]`,
		"admin-token machine.approve " + id + " failed_precondition: ",
		"admin-token machine.reinstate " + id + " ok []",
	}
	if len(recs) != len(want) {
		var got []string
		for _, r := range recs {
			got = append(got, line(r))
		}
		t.Fatalf("got %d records, want %d:\n%s", len(recs), len(want), strings.Join(got, "\n"))
	}
	for i, r := range recs {
		if got := line(r); !strings.HasPrefix(got, want[i]) {
			t.Errorf("record %d:\ngot  %s\nwant %s", i, got, want[i])
		}
		if r.GetActor().GetName() != "admin-token" || r.Time == nil || (i > 0 && r.Id <= recs[i-1].Id) {
			t.Errorf("record %d: got %v, want the admin's name, a time, and increasing IDs", i, r)
		}
		if i == 0 && r.RequestId != "change-4711" {
			t.Errorf("record 0: request ID %q, want the caller's change-4711", r.RequestId)
		}
		if i > 0 && r.RequestId != ids[i-1] {
			t.Errorf("record %d: request ID %q, want %q, the one its answer said", i, r.RequestId, ids[i-1])
		}
	}

	evs, err := e.events.ListEvents(ctx, admin(&attestationv1.ListEventsRequest{Machine: id}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs.Msg.Events {
		actor := ev.GetActor().GetSubject()
		if payload := ev.Payload.GetFields()["actor"].GetStructValue().GetFields()["subject"].GetStringValue(); payload != actor {
			t.Errorf("%s: the payload's actor %q, the event's %q, want the same", ev.Type, payload, actor)
		}
		got = append(got, ev.Type+":"+actor)
	}
	if want := "node.registered:admin-token node.online: node.provisioned:admin-token node.role_changed:admin-token " +
		"node.decommissioned:admin-token node.registered:admin-token"; strings.Join(got, " ") != want {
		t.Errorf("events and their actors:\ngot  %s\nwant %s", strings.Join(got, " "), want)
	}
}

// TestAuditFilters filters the trail by machine, actor, action and time,
// and pages through it, over Connect and REST.
func TestAuditFilters(t *testing.T) {
	e := newAuditEnv(t)
	ctx := t.Context()
	var machines []string
	for i := range 3 {
		m := e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(10 + i), Role: "worker"})
		machines = append(machines, m.Id)
	}
	for _, id := range machines[:2] {
		if _, err := e.machines.SetMachineRole(ctx, admin(&attestationv1.SetMachineRoleRequest{Id: id, Role: "db"})); err != nil {
			t.Fatal(err)
		}
	}
	// Over REST: the transcoded call is recorded alike.
	revoke, _ := http.NewRequest(http.MethodPost, e.d.URL+"/api/v1/machines/"+machines[0]+"/revoke", strings.NewReader(`{"reason": "gone"}`))
	revoke.Header.Set("Authorization", bearer(daemontest.Token))
	revoke.Header.Set("X-Request-Id", "rest-revoke")
	resp, err := http.DefaultClient.Do(revoke)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Request-Id") != "rest-revoke" {
		t.Fatalf("POST revoke: HTTP %d, X-Request-Id %q; want 200 and rest-revoke", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	// 3 registrations, 2 role changes, 1 revocation.
	future := timestamppb.New(time.Now().Add(time.Hour))
	past := timestamppb.New(time.Now().Add(-time.Hour))
	for _, c := range []struct {
		name string
		req  *attestationv1.ListAuditRecordsRequest
		want int
	}{
		{"all", &attestationv1.ListAuditRecordsRequest{}, 6},
		{"one machine", &attestationv1.ListAuditRecordsRequest{Machine: strings.ToUpper(machines[0])}, 3},
		{"an action", &attestationv1.ListAuditRecordsRequest{Action: "machine.set_role"}, 2},
		{"machine and action", &attestationv1.ListAuditRecordsRequest{Machine: machines[1], Action: "machine.revoke"}, 0},
		{"actor by subject", &attestationv1.ListAuditRecordsRequest{Actor: "admin-token"}, 6},
		{"another actor", &attestationv1.ListAuditRecordsRequest{Actor: "mallory"}, 0},
		{"since an hour ago", &attestationv1.ListAuditRecordsRequest{Since: past}, 6},
		{"since later", &attestationv1.ListAuditRecordsRequest{Since: future}, 0},
		{"pages of one", &attestationv1.ListAuditRecordsRequest{PageSize: 1}, 6},
		{"pages of four", &attestationv1.ListAuditRecordsRequest{PageSize: 4}, 6},
	} {
		t.Run(c.name, func(t *testing.T) {
			recs := e.records(t, c.req)
			if len(recs) != c.want {
				t.Fatalf("got %d records, want %d", len(recs), c.want)
			}
			for i := 1; i < len(recs); i++ {
				if recs[i].Id <= recs[i-1].Id {
					t.Errorf("records %d and %d out of order: IDs %d, %d", i-1, i, recs[i-1].Id, recs[i].Id)
				}
			}
		})
	}

	first, err := e.audit.ListAuditRecords(ctx, admin(&attestationv1.ListAuditRecordsRequest{PageSize: 5}))
	if err != nil || len(first.Msg.Records) != 5 || first.Msg.NextPageToken == "" {
		t.Fatalf("first page of 5: got %v, %v; want 5 records and a next page", first, err)
	}
	last, err := e.audit.ListAuditRecords(ctx, admin(&attestationv1.ListAuditRecordsRequest{PageSize: 5, PageToken: first.Msg.NextPageToken}))
	if err != nil || len(last.Msg.Records) != 1 || last.Msg.NextPageToken != "" {
		t.Fatalf("last page: got %v, %v; want 1 record and no next page", last, err)
	}

	for _, c := range []struct {
		name string
		req  *attestationv1.ListAuditRecordsRequest
		want string
	}{
		{"a bad machine ID", &attestationv1.ListAuditRecordsRequest{Machine: "node-1"}, `"node-1" is not a machine ID`},
		{"a bad page token", &attestationv1.ListAuditRecordsRequest{PageToken: "nope"}, "page_token: not a token from a previous response"},
		{"a page too large", &attestationv1.ListAuditRecordsRequest{PageSize: 1001}, "page_size"},
	} {
		_, err := e.audit.ListAuditRecords(ctx, admin(c.req))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want invalid_argument saying %q", c.name, err, c.want)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, e.d.URL+"/api/v1/audit?machine="+machines[0]+"&action=machine.revoke&since="+
		time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), nil)
	req.Header.Set("Authorization", bearer(daemontest.Token))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Records []struct {
			Action    string `json:"action"`
			MachineID string `json:"machine_id"`
			RequestID string `json:"request_id"`
			Result    string `json:"result"`
			Detail    string `json:"detail"`
			Actor     struct{ Subject, Name string }
		} `json:"records"`
		NextPageToken *string `json:"next_page_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/audit: HTTP %d, %v", resp.StatusCode, err)
	}
	if len(body.Records) != 1 || body.NextPageToken == nil {
		t.Fatalf("GET /api/v1/audit: got %+v, want one record and next_page_token", body)
	}
	if r := body.Records[0]; r.Action != "machine.revoke" || r.MachineID != machines[0] || r.Result != "ok" ||
		r.Detail != "reason=gone" || r.Actor.Subject != "admin-token" || r.RequestID != "rest-revoke" {
		t.Errorf("GET /api/v1/audit: got %+v", r)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("GET /api/v1/audit: no X-Request-Id in the answer")
	}
}

// TestAuditedProcedures proves that every operator procedure either only
// reads (its REST route is a GET, or it streams) or is recorded.
func TestAuditedProcedures(t *testing.T) {
	for _, name := range api.OperatorServices {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatal(err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for i := range sd.Methods().Len() {
			m := sd.Methods().Get(i)
			proc := "/" + name + "/" + string(m.Name())
			opts, _ := m.Options().(*descriptorpb.MethodOptions)
			reads := m.IsStreamingServer() || opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
			if reads == api.Audited(proc) {
				t.Errorf("%s: reads only %v, audited %v: a procedure that changes something must be audited, and one that reads must not", proc, reads, api.Audited(proc))
			}
		}
	}
}

// TestAuditRefusedByRole: a caller without the role an action needs is
// recorded, named, with permission_denied; a caller without credentials
// is not recorded (there is no one to name).
func TestAuditRefusedByRole(t *testing.T) {
	iss := authtest.Start(t)
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.OIDCIssuer = iss.URL }})
	claims := iss.Claims("8d1f0c3e-vera", "viewer")
	claims["preferred_username"] = "vera"
	viewer := bearer(iss.Token(t, claims))
	machines := attestationv1connect.NewMachineServiceClient(http.DefaultClient, d.URL)
	id := uuid.NewString()
	_, err := machines.RevokeMachine(t.Context(), request(&attestationv1.RevokeMachineRequest{Id: id, Reason: "x"}, viewer, "by-vera"))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("revoke as a viewer: got %v, want permission_denied", err)
	}
	_, err = machines.RevokeMachine(t.Context(), request(&attestationv1.RevokeMachineRequest{Id: id, Reason: "x"}, "", "anonymous"))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("revoke without a token: got %v, want unauthenticated", err)
	}
	resp, err := attestationv1connect.NewAuditServiceClient(http.DefaultClient, d.URL).ListAuditRecords(t.Context(),
		admin(&attestationv1.ListAuditRecordsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	recs := resp.Msg.Records
	if len(recs) != 1 {
		t.Fatalf("got %d records, want only the viewer's refusal: %v", len(recs), recs)
	}
	r := recs[0]
	if r.Actor.GetName() != "vera" || r.Actor.GetSubject() != claims["sub"] || r.Action != "machine.revoke" || r.MachineId != id ||
		r.RequestId != "by-vera" || !strings.HasPrefix(r.Result, "permission_denied: RevokeMachine needs the operator role") {
		t.Errorf("got %v, want vera's refused revocation of %s", r, id)
	}
}

// TestAuditExtensionRoutes: an extension's mutating routes are recorded
// as "<extension> <METHOD> <pattern>" with the machine their
// {machine_id} names; its reads are not.
func TestAuditExtensionRoutes(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{Extensions: []extensions.Extension{&tags.Extension{}}})
	e := &auditEnv{env: &env{d: d, admin: newConnectTransport(d.URL, bearer(daemontest.Token))},
		audit: attestationv1connect.NewAuditServiceClient(http.DefaultClient, d.URL)}
	id := e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(1)}).Id
	do := func(method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, d.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", bearer(daemontest.Token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do(http.MethodPost, "/api/v1/tags/machines/"+id+"/tags", `{"key": "rack", "value": "r1"}`); got != http.StatusCreated && got != http.StatusOK {
		t.Fatalf("add a tag: HTTP %d", got)
	}
	if got := do(http.MethodPost, "/api/v1/tags/machines/"+id+"/tags", `{"key": ""}`); got != http.StatusBadRequest {
		t.Fatalf("add an empty tag: HTTP %d, want 400", got)
	}
	if got := do(http.MethodGet, "/api/v1/tags/machines/"+id+"/tags", ""); got != http.StatusOK {
		t.Fatalf("list tags: HTTP %d", got)
	}
	if got := do(http.MethodPost, "/api/v1/tags/no/such/route", "{}"); got != http.StatusNotFound {
		t.Fatalf("no route: HTTP %d, want 404", got)
	}
	recs := e.records(t, &attestationv1.ListAuditRecordsRequest{Action: "tags POST /machines/{machine_id}/tags"})
	if len(recs) != 2 {
		t.Fatalf("got %d records of tags POST, want 2: %v", len(recs), recs)
	}
	if r := recs[0]; r.MachineId != id || r.Result != "ok" || r.Actor.GetSubject() != "admin-token" || r.RequestId == "" {
		t.Errorf("added tag: got %v", r)
	}
	if r := recs[1]; r.MachineId != id || !strings.HasPrefix(r.Result, "invalid_argument: ") {
		t.Errorf("refused tag: got %v, want invalid_argument", r)
	}
	if all := e.records(t, &attestationv1.ListAuditRecordsRequest{}); len(all) != 3 {
		t.Errorf("got %d records, want the registration and the two tag calls: %v", len(all), all)
	}
}

// TestAuditConfigsAndSchematics: configs set and delete, schematics
// create and image builds are recorded, refused ones with their error.
func TestAuditConfigsAndSchematics(t *testing.T) {
	e := newAuditEnv(t)
	ctx := t.Context()
	sid := e.schematic(t, `{"kernel_args": ["console=ttyS0"]}`)
	cfgs := attestationv1connect.NewConfigServiceClient(http.DefaultClient, e.d.URL)
	if _, err := cfgs.SetConfig(ctx, admin(&attestationv1.SetConfigRequest{Role: "worker", Template: "hostname: {{.Hostname}}\n", SchematicId: sid})); err != nil {
		t.Fatal(err)
	}
	if _, err := cfgs.DeleteConfig(ctx, admin(&attestationv1.DeleteConfigRequest{Role: "worker"})); err != nil {
		t.Fatal(err)
	}
	if _, err := cfgs.DeleteConfig(ctx, admin(&attestationv1.DeleteConfigRequest{Role: "worker"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("delete a missing config: got %v, want not_found", err)
	}
	// The test daemon has no boot assets: the build is refused.
	schematics := attestationv1connect.NewSchematicServiceClient(http.DefaultClient, e.d.URL)
	if _, err := schematics.BuildImage(ctx, admin(&attestationv1.BuildImageRequest{Id: sid})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("build without boot assets: got %v, want failed_precondition", err)
	}
	var got []string
	for _, r := range e.records(t, &attestationv1.ListAuditRecordsRequest{}) {
		result, _, _ := strings.Cut(r.Result, ":")
		got = append(got, r.Action+" "+result+" ["+r.Detail+"]")
	}
	want := []string{
		"schematic.create ok [schematic=" + sid + "]",
		"config.set ok [role=worker schematic=" + sid + "]",
		"config.delete ok [role=worker]",
		"config.delete not_found [role=worker]",
		"image.build failed_precondition [schematic=" + sid + "]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\ngot  %q\nwant %q", got, want)
	}
}
