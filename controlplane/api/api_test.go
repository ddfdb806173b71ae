package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// unknownID is a well-formed machine ID that no machine has.
const unknownID = "0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a"

// TestRPCs drives every operator RPC through Connect, gRPC and REST.
func TestRPCs(t *testing.T) {
	for _, name := range transportNames {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			tr := e.transport(t, name)

			exts := call[*attestationv1.ListExtensionsResponse](t, tr, procExts, &attestationv1.ListExtensionsRequest{})
			if len(exts.Extensions) != 0 {
				t.Errorf("ListExtensions: got %v, want none", exts.Extensions)
			}

			fp1, fp2 := fingerprint(1), fingerprint(2)
			m1 := call[*attestationv1.RegisterMachineResponse](t, tr, procRegister, &attestationv1.RegisterMachineRequest{
				EkFingerprint: strings.ToUpper(fp1),
				Macs:          []string{"52-54-00-AB-CD-01", "52:54:00:ab:cd:02"},
				Role:          "worker",
				Hostname:      "node-1",
			}).Machine
			for _, c := range []struct{ field, got, want string }{
				{"ek_fingerprint", m1.EkFingerprint, fp1},
				{"macs", strings.Join(m1.Macs, ","), "52:54:00:ab:cd:01,52:54:00:ab:cd:02"},
				{"state", m1.State, "registered"},
				{"role", m1.Role, "worker"},
				{"hostname", m1.Hostname, "node-1"},
			} {
				if c.got != c.want {
					t.Errorf("RegisterMachine %s: got %q, want %q", c.field, c.got, c.want)
				}
			}
			if !uuidRE.MatchString(m1.Id) || !m1.PreRegistered || m1.RegisteredAt == nil || m1.ApprovedAt != nil {
				t.Errorf("RegisterMachine: got id %q, pre_registered %v, registered_at %v, approved_at %v; want a UUID, true, set, unset",
					m1.Id, m1.PreRegistered, m1.RegisteredAt, m1.ApprovedAt)
			}
			m2 := call[*attestationv1.RegisterMachineResponse](t, tr, procRegister,
				&attestationv1.RegisterMachineRequest{EkFingerprint: fp2}).Machine

			for _, id := range []string{m2.Id, strings.ToUpper(m2.Id)} {
				got := call[*attestationv1.GetMachineResponse](t, tr, procGet, &attestationv1.GetMachineRequest{Id: id}).Machine
				if !proto.Equal(got, m2) {
					t.Errorf("GetMachine %s: got %s, want %s", id, text(got), text(m2))
				}
			}

			page1 := call[*attestationv1.ListMachinesResponse](t, tr, procList, &attestationv1.ListMachinesRequest{PageSize: 1})
			for _, c := range []struct {
				name string
				req  *attestationv1.ListMachinesRequest
				want []string
				next bool
			}{
				{"all", &attestationv1.ListMachinesRequest{}, []string{m1.Id, m2.Id}, false},
				{"state registered", &attestationv1.ListMachinesRequest{State: "registered"}, []string{m1.Id, m2.Id}, false},
				{"state attested", &attestationv1.ListMachinesRequest{State: "attested"}, nil, false},
				{"role", &attestationv1.ListMachinesRequest{Role: "worker"}, []string{m1.Id}, false},
				{"first page", &attestationv1.ListMachinesRequest{PageSize: 1}, []string{m1.Id}, true},
				{"second page", &attestationv1.ListMachinesRequest{PageSize: 1, PageToken: page1.NextPageToken}, []string{m2.Id}, false},
				{"exact page", &attestationv1.ListMachinesRequest{PageSize: 2}, []string{m1.Id, m2.Id}, false},
			} {
				t.Run("ListMachines/"+c.name, func(t *testing.T) {
					resp := call[*attestationv1.ListMachinesResponse](t, tr, procList, c.req)
					var ids []string
					for _, m := range resp.Machines {
						ids = append(ids, m.Id)
					}
					if !slices.Equal(ids, c.want) {
						t.Errorf("got machines %v, want %v", ids, c.want)
					}
					if (resp.NextPageToken != "") != c.next {
						t.Errorf("got next_page_token %q, want one: %v", resp.NextPageToken, c.next)
					}
				})
			}

			e.attest(t, m2.Id)
			// A schematic that does not exist is refused; a stored one is
			// taken (its ID in any case).
			_, err := tr.Call(t.Context(), procApprove, &attestationv1.ApproveMachineRequest{
				Id: m2.Id, Role: "db", Hostname: "db-1", SchematicId: strings.Repeat("ab", 32)})
			wantError(t, err, connect.CodeInvalidArgument, "schematic "+strings.Repeat("ab", 32)+" does not exist")
			schematicID := e.schematic(t, `{"labels": {"role": "db"}}`)
			approved := call[*attestationv1.ApproveMachineResponse](t, tr, procApprove, &attestationv1.ApproveMachineRequest{
				Id: m2.Id, Role: "db", Hostname: "db-1", SchematicId: strings.ToUpper(schematicID),
			}).Machine
			if approved.State != "provisioned" || approved.Role != "db" || approved.Hostname != "db-1" ||
				approved.SchematicId != schematicID || approved.ApprovedAt == nil {
				t.Errorf("ApproveMachine: got %s, want provisioned db db-1 with the schematic, approved_at set", text(approved))
			}

			role := call[*attestationv1.SetMachineRoleResponse](t, tr, procSetRole,
				&attestationv1.SetMachineRoleRequest{Id: m2.Id, Role: "cache"}).Machine
			if role.Role != "cache" || role.State != "provisioned" {
				t.Errorf("SetMachineRole: got role %q state %q, want cache provisioned", role.Role, role.State)
			}

			revoked := call[*attestationv1.RevokeMachineResponse](t, tr, procRevoke,
				&attestationv1.RevokeMachineRequest{Id: m2.Id, Reason: "  disk failed\n"}).Machine
			if revoked.State != "decommissioned" || revoked.DecommissionReason != "disk failed" || revoked.DecommissionedAt == nil {
				t.Errorf("RevokeMachine: got state %q reason %q decommissioned_at %v, want decommissioned, \"disk failed\", set",
					revoked.State, revoked.DecommissionReason, revoked.DecommissionedAt)
			}

			back := call[*attestationv1.ReinstateMachineResponse](t, tr, procReinstate,
				&attestationv1.ReinstateMachineRequest{Id: m2.Id}).Machine
			if back.State != "registered" || back.DecommissionReason != "" || back.DecommissionedAt != nil || back.ApprovedAt != nil {
				t.Errorf("ReinstateMachine: got %s, want registered with decommission and approval cleared", text(back))
			}

			evs := call[*attestationv1.ListEventsResponse](t, tr, procEvents, &attestationv1.ListEventsRequest{Machine: m2.Id})
			want := "node.registered node.online node.provisioned node.role_changed node.decommissioned node.registered"
			if got := eventTypes(evs.Events); got != want {
				t.Fatalf("ListEvents: got %s, want %s", got, want)
			}
			for i, c := range []struct{ field, want string }{
				{"event", "node.registered"}, {"event", "node.online"}, {"role", "db"}, {"new_role", "cache"}, {"reason", "disk failed"}, {"reinstated", "true"},
			} {
				ev := evs.Events[i]
				if ev.MachineId != m2.Id || ev.EkFingerprint != fp2 || !uuidRE.MatchString(ev.Id) || ev.Time == nil {
					t.Errorf("event %d: got machine %q ek %q id %q time %v, want %s %s, a UUID, a time", i, ev.MachineId, ev.EkFingerprint, ev.Id, ev.Time, m2.Id, fp2)
				}
				v, ok := ev.Payload.GetFields()[c.field]
				if got := fmtValue(v); !ok || got != c.want {
					t.Errorf("event %d (%s) payload %s: got %q, want %q", i, ev.Type, c.field, got, c.want)
				}
			}

			for _, c := range []struct {
				name     string
				req      *attestationv1.ListEventsRequest
				want     string
				nextSeq  int64
				wantNext bool
			}{
				{"type", &attestationv1.ListEventsRequest{Type: "node.registered"}, "node.registered node.registered node.registered", 0, false},
				{"first page", &attestationv1.ListEventsRequest{PageSize: 2}, "node.registered node.registered", 0, true},
				{"after seq", &attestationv1.ListEventsRequest{AfterSeq: evs.Events[3].Seq}, "node.decommissioned node.registered", 0, false},
				{"exact last page", &attestationv1.ListEventsRequest{AfterSeq: evs.Events[3].Seq, PageSize: 2}, "node.decommissioned node.registered", 0, false},
				{"machine and type", &attestationv1.ListEventsRequest{Machine: m1.Id, Type: "node.online"}, "", 0, false},
				{"machine in upper case", &attestationv1.ListEventsRequest{Machine: strings.ToUpper(m1.Id)}, "node.registered", 0, false},
			} {
				t.Run("ListEvents/"+c.name, func(t *testing.T) {
					resp := call[*attestationv1.ListEventsResponse](t, tr, procEvents, c.req)
					if got := eventTypes(resp.Events); got != c.want {
						t.Errorf("got %q, want %q", got, c.want)
					}
					if (resp.NextAfterSeq != 0) != c.wantNext {
						t.Errorf("got next_after_seq %d, want one: %v", resp.NextAfterSeq, c.wantNext)
					}
					if c.wantNext && resp.NextAfterSeq != resp.Events[len(resp.Events)-1].Seq {
						t.Errorf("got next_after_seq %d, want the last event's seq %d", resp.NextAfterSeq, resp.Events[len(resp.Events)-1].Seq)
					}
				})
			}
		})
	}
}

func fmtValue(v interface{ AsInterface() any }) string {
	if v == nil {
		return ""
	}
	b, _ := json.Marshal(v.AsInterface())
	s := string(b)
	if strings.HasPrefix(s, `"`) {
		json.Unmarshal(b, &s)
	}
	return s
}

// TestRESTExtensions checks the REST body exactly: with no extension
// compiled in, it is an empty JSON object.
func TestRESTExtensions(t *testing.T) {
	e := newEnv(t)
	r := &restTransport{base: e.d.URL, authorization: bearer(daemontest.Token)}
	status, body, err := r.do(t.Context(), http.MethodGet, "/api/v1/extensions", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("got body %q, want JSON: %v", body, err)
	}
	if m, ok := got.(map[string]any); status != http.StatusOK || !ok || len(m) != 0 {
		t.Errorf("got HTTP %d %s, want 200 {}", status, body)
	}
}

// TestValidation sends bad input and wants InvalidArgument (HTTP 400)
// naming the field, with nothing changed.
func TestValidation(t *testing.T) {
	type input struct {
		proc string
		req  func(f fixture) proto.Message
	}
	cases := []struct {
		name  string
		in    input
		field string
	}{
		{"get id not a UUID", input{procGet, func(f fixture) proto.Message {
			return &attestationv1.GetMachineRequest{Id: "not-a-uuid"}
		}}, "id"},
		{"get id UUID with junk", input{procGet, func(f fixture) proto.Message {
			return &attestationv1.GetMachineRequest{Id: f.registered.Id + "x"}
		}}, "id"},
		{"approve id not a UUID", input{procApprove, func(f fixture) proto.Message {
			return &attestationv1.ApproveMachineRequest{Id: "1234", Role: "worker", Hostname: "node-1"}
		}}, "id"},
		{"revoke id not a UUID", input{procRevoke, func(f fixture) proto.Message {
			return &attestationv1.RevokeMachineRequest{Id: "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", Reason: "x"}
		}}, "id"},
		{"set role id not a UUID", input{procSetRole, func(f fixture) proto.Message {
			return &attestationv1.SetMachineRoleRequest{Id: "machine-1", Role: "worker"}
		}}, "id"},
		{"reinstate id not a UUID", input{procReinstate, func(f fixture) proto.Message {
			return &attestationv1.ReinstateMachineRequest{Id: "x"}
		}}, "id"},
		{"list unknown state", input{procList, func(f fixture) proto.Message {
			return &attestationv1.ListMachinesRequest{State: "broken"}
		}}, "state"},
		{"list negative page size", input{procList, func(f fixture) proto.Message {
			return &attestationv1.ListMachinesRequest{PageSize: -1}
		}}, "page_size"},
		{"list page size too big", input{procList, func(f fixture) proto.Message {
			return &attestationv1.ListMachinesRequest{PageSize: 1001}
		}}, "page_size"},
		{"list bad page token", input{procList, func(f fixture) proto.Message {
			return &attestationv1.ListMachinesRequest{PageToken: "not a token"}
		}}, "page_token"},
		{"events machine not a UUID", input{procEvents, func(f fixture) proto.Message {
			return &attestationv1.ListEventsRequest{Machine: "node-1"}
		}}, "machine"},
		{"events unknown type", input{procEvents, func(f fixture) proto.Message {
			return &attestationv1.ListEventsRequest{Type: "node.exploded"}
		}}, "type"},
		{"events negative after_seq", input{procEvents, func(f fixture) proto.Message {
			return &attestationv1.ListEventsRequest{AfterSeq: -1}
		}}, "after_seq"},
		{"register short fingerprint", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: "abc123"}
		}}, "ek_fingerprint"},
		{"register long fingerprint", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9) + "0"}
		}}, "ek_fingerprint"},
		{"register non-hex fingerprint", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: strings.Repeat("g", 64)}
		}}, "ek_fingerprint"},
		{"register empty fingerprint", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{}
		}}, "ek_fingerprint"},
		{"register short MAC", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), Macs: []string{"52:54:00:12:34"}}
		}}, "macs"},
		{"register non-hex MAC", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), Macs: []string{"52:54:00:12:34:zz"}}
		}}, "macs"},
		{"register duplicate MAC", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), Macs: []string{"52:54:00:12:34:56", "52:54:00:12:34:56"}}
		}}, "macs"},
		{"register upper-case role", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), Role: "Worker"}
		}}, "role"},
		{"register role starting with a digit", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), Role: "1worker"}
		}}, "role"},
		{"register hostname with underscore", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), Hostname: "node_1"}
		}}, "hostname"},
		{"register hostname label too long", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), Hostname: strings.Repeat("a", 64) + ".example"}
		}}, "hostname"},
		{"register bad schematic", input{procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9), SchematicId: "abc"}
		}}, "schematic_id"},
		{"approve without role", input{procApprove, func(f fixture) proto.Message {
			return &attestationv1.ApproveMachineRequest{Id: f.attested.Id, Hostname: "node-2"}
		}}, "role"},
		{"approve without hostname", input{procApprove, func(f fixture) proto.Message {
			return &attestationv1.ApproveMachineRequest{Id: f.attested.Id, Role: "worker"}
		}}, "hostname"},
		{"approve bad hostname", input{procApprove, func(f fixture) proto.Message {
			return &attestationv1.ApproveMachineRequest{Id: f.attested.Id, Role: "worker", Hostname: "-node"}
		}}, "hostname"},
		{"revoke empty reason", input{procRevoke, func(f fixture) proto.Message {
			return &attestationv1.RevokeMachineRequest{Id: f.registered.Id}
		}}, "reason"},
		{"revoke whitespace reason", input{procRevoke, func(f fixture) proto.Message {
			return &attestationv1.RevokeMachineRequest{Id: f.registered.Id, Reason: " \t\n "}
		}}, "reason"},
		{"revoke oversize reason", input{procRevoke, func(f fixture) proto.Message {
			return &attestationv1.RevokeMachineRequest{Id: f.registered.Id, Reason: strings.Repeat("x", 1025)}
		}}, "reason"},
		{"set role empty", input{procSetRole, func(f fixture) proto.Message {
			return &attestationv1.SetMachineRoleRequest{Id: f.registered.Id}
		}}, "role"},
		{"set role bad", input{procSetRole, func(f fixture) proto.Message {
			return &attestationv1.SetMachineRoleRequest{Id: f.registered.Id, Role: "db server"}
		}}, "role"},
	}
	for _, name := range transportNames {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			f := e.fixture(t)
			tr := e.transport(t, name)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					before := e.snapshot(t)
					_, err := tr.Call(t.Context(), c.in.proc, c.in.req(f))
					wantError(t, err, connect.CodeInvalidArgument, c.field)
					e.unchanged(t, before)
				})
			}
		})
	}
}

// TestRESTValidation sends REST requests that only REST can carry: bad
// JSON, unknown fields and query parameters, wrong types.
func TestRESTValidation(t *testing.T) {
	e := newEnv(t)
	f := e.fixture(t)
	r := &restTransport{base: e.d.URL, authorization: bearer(daemontest.Token)}
	fp := fingerprint(9)
	cases := []struct {
		name, method, path, body string
		field                    string
	}{
		{"unknown JSON field", "POST", "/api/v1/register", `{"ek_fingerprint":"` + fp + `","colour":"red"}`, "colour"},
		{"camel-case typo", "POST", "/api/v1/register", `{"ekFingerprnt":"` + fp + `"}`, "ekFingerprnt"},
		{"malformed JSON", "POST", "/api/v1/register", `{"ek_fingerprint":"` + fp, "JSON"},
		{"not an object", "POST", "/api/v1/register", `["` + fp + `"]`, "JSON"},
		{"wrong JSON type", "POST", "/api/v1/register", `{"ek_fingerprint":42}`, "ek_fingerprint"},
		{"MACs not a list", "POST", "/api/v1/register", `{"ek_fingerprint":"` + fp + `","macs":"52:54:00:12:34:56"}`, "macs"},
		{"empty body", "POST", "/api/v1/register", ``, "ek_fingerprint"},
		{"unknown field in approve", "POST", "/api/v1/machines/" + f.attested.Id + "/approve", `{"role":"worker","hostname":"n","force":true}`, "force"},
		{"reason not a string", "POST", "/api/v1/machines/" + f.registered.Id + "/revoke", `{"reason":["x"]}`, "reason"},
		{"unknown query parameter", "GET", "/api/v1/machines?colour=red", "", "colour"},
		{"unknown query parameter on events", "GET", "/api/v1/events?machine_id=" + f.registered.Id, "", "machine_id"},
		{"unknown state in query", "GET", "/api/v1/machines?state=broken", "", "state"},
		{"page size not a number", "GET", "/api/v1/machines?page_size=ten", "", "page_size"},
		{"page size overflows", "GET", "/api/v1/machines?page_size=99999999999", "", "page_size"},
		{"after_seq not a number", "GET", "/api/v1/events?after_seq=x", "", "after_seq"},
		{"machine ID in path", "GET", "/api/v1/machines/not-a-uuid", "", "id"},
		{"escaped machine ID in path", "GET", "/api/v1/machines/%2e%2e", "", "id"},
		{"machine ID not UTF-8", "GET", "/api/v1/machines/%ff%fe", "", "path"},
		{"query not UTF-8", "GET", "/api/v1/machines?role=%ff", "", "role"},
		{"body on a GET", "GET", "/api/v1/machines", "{}", "body"},
		{"unknown query parameter on a POST", "POST", "/api/v1/machines/" + f.registered.Id + "/revoke?force=1", `{"reason":"x"}`, "force"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.snapshot(t)
			var body io.Reader
			if c.method == http.MethodPost || c.body != "" {
				body = strings.NewReader(c.body)
			}
			status, out, err := r.do(t.Context(), c.method, c.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusBadRequest {
				t.Errorf("got HTTP %d %s, want 400", status, out)
			}
			wantError(t, restError(status, out), connect.CodeInvalidArgument, c.field)
			e.unchanged(t, before)
		})
	}
}

// TestNotFound operates on a machine that does not exist.
func TestNotFound(t *testing.T) {
	cases := []struct {
		name string
		proc string
		req  proto.Message
	}{
		{"get", procGet, &attestationv1.GetMachineRequest{Id: unknownID}},
		{"approve", procApprove, &attestationv1.ApproveMachineRequest{Id: unknownID, Role: "worker", Hostname: "node-1"}},
		{"revoke", procRevoke, &attestationv1.RevokeMachineRequest{Id: unknownID, Reason: "gone"}},
		{"set role", procSetRole, &attestationv1.SetMachineRoleRequest{Id: unknownID, Role: "worker"}},
		{"reinstate", procReinstate, &attestationv1.ReinstateMachineRequest{Id: unknownID}},
	}
	for _, name := range transportNames {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.fixture(t)
			tr := e.transport(t, name)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					before := e.snapshot(t)
					_, err := tr.Call(t.Context(), c.proc, c.req)
					wantError(t, err, connect.CodeNotFound, unknownID, "not found")
					e.unchanged(t, before)
				})
			}
		})
	}
}

// TestConflicts tries illegal transitions and duplicate registrations:
// FailedPrecondition or AlreadyExists (HTTP 409) naming the current state,
// with nothing changed.
func TestConflicts(t *testing.T) {
	cases := []struct {
		name     string
		proc     string
		req      func(f fixture) proto.Message
		code     connect.Code
		contains func(f fixture) []string
	}{
		{"approve registered", procApprove, func(f fixture) proto.Message {
			return &attestationv1.ApproveMachineRequest{Id: f.registered.Id, Role: "worker", Hostname: "node-1"}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"registered", "attested"} }},
		{"approve provisioned", procApprove, func(f fixture) proto.Message {
			return &attestationv1.ApproveMachineRequest{Id: f.provisioned.Id, Role: "db", Hostname: "db-1"}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"provisioned"} }},
		{"approve decommissioned", procApprove, func(f fixture) proto.Message {
			return &attestationv1.ApproveMachineRequest{Id: f.decommissioned.Id, Role: "db", Hostname: "db-1"}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"decommissioned", "reinstate"} }},
		{"revoke twice", procRevoke, func(f fixture) proto.Message {
			return &attestationv1.RevokeMachineRequest{Id: f.decommissioned.Id, Reason: "again"}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"decommissioned"} }},
		{"reinstate registered", procReinstate, func(f fixture) proto.Message {
			return &attestationv1.ReinstateMachineRequest{Id: f.registered.Id}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"registered", "not decommissioned"} }},
		{"reinstate attested", procReinstate, func(f fixture) proto.Message {
			return &attestationv1.ReinstateMachineRequest{Id: f.attested.Id}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"attested"} }},
		{"reinstate provisioned", procReinstate, func(f fixture) proto.Message {
			return &attestationv1.ReinstateMachineRequest{Id: f.provisioned.Id}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"provisioned"} }},
		{"set role decommissioned", procSetRole, func(f fixture) proto.Message {
			return &attestationv1.SetMachineRoleRequest{Id: f.decommissioned.Id, Role: "db"}
		}, connect.CodeFailedPrecondition, func(fixture) []string { return []string{"decommissioned"} }},
		{"register known EK", procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: f.registered.EkFingerprint, Role: "db"}
		}, connect.CodeAlreadyExists, func(f fixture) []string { return []string{f.registered.Id, "registered"} }},
		{"register known EK in upper case", procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: strings.ToUpper(f.provisioned.EkFingerprint)}
		}, connect.CodeAlreadyExists, func(f fixture) []string { return []string{f.provisioned.Id, "provisioned"} }},
		{"register decommissioned EK", procRegister, func(f fixture) proto.Message {
			return &attestationv1.RegisterMachineRequest{EkFingerprint: f.decommissioned.EkFingerprint}
		}, connect.CodeFailedPrecondition, func(f fixture) []string { return []string{f.decommissioned.Id, "decommissioned", "reinstate"} }},
	}
	for _, name := range transportNames {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			f := e.fixture(t)
			tr := e.transport(t, name)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					before := e.snapshot(t)
					_, err := tr.Call(t.Context(), c.proc, c.req(f))
					wantError(t, err, c.code, c.contains(f)...)
					e.unchanged(t, before)
				})
			}
		})
	}
}

// TestAuth calls every operator route without a valid token.
func TestAuth(t *testing.T) {
	e := newEnv(t)
	f := e.fixture(t)
	// Valid requests that would change something if they were let through.
	calls := []struct {
		proc string
		req  proto.Message
	}{
		{procList, &attestationv1.ListMachinesRequest{}},
		{procGet, &attestationv1.GetMachineRequest{Id: f.registered.Id}},
		{procRegister, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(9)}},
		{procApprove, &attestationv1.ApproveMachineRequest{Id: f.attested.Id, Role: "worker", Hostname: "node-2"}},
		{procRevoke, &attestationv1.RevokeMachineRequest{Id: f.registered.Id, Reason: "stolen"}},
		{procSetRole, &attestationv1.SetMachineRoleRequest{Id: f.registered.Id, Role: "db"}},
		{procReinstate, &attestationv1.ReinstateMachineRequest{Id: f.decommissioned.Id}},
		{procEvents, &attestationv1.ListEventsRequest{}},
		{procExts, &attestationv1.ListExtensionsRequest{}},
	}
	creds := []struct {
		name, authorization, message string
	}{
		{"no token", "", "no bearer token"},
		{"wrong token", bearer("not-the-token"), "invalid bearer token"},
		{"token of another scheme", "Basic " + daemontest.Token, "no bearer token"},
		{"empty bearer", "Bearer ", "no bearer token"},
	}
	for _, name := range transportNames {
		for _, cr := range creds {
			t.Run(name+"/"+cr.name, func(t *testing.T) {
				tr := newTransport(t, name, e.d, cr.authorization)
				before := e.snapshot(t)
				for _, c := range calls {
					_, err := tr.Call(t.Context(), c.proc, c.req)
					wantError(t, err, connect.CodeUnauthenticated, cr.message)
				}
				e.unchanged(t, before)
			})
		}
	}

	t.Run("watch", func(t *testing.T) {
		for _, cr := range creds {
			t.Run("connect/"+cr.name, func(t *testing.T) {
				c := attestationv1connect.NewEventServiceClient(http.DefaultClient, e.d.URL)
				req := connect.NewRequest(&attestationv1.WatchEventsRequest{AfterSeq: proto.Int64(0)})
				if cr.authorization != "" {
					req.Header().Set("Authorization", cr.authorization)
				}
				stream, err := c.WatchEvents(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				defer stream.Close()
				if stream.Receive() {
					t.Fatalf("got event %s, want none", text(stream.Msg()))
				}
				wantError(t, stream.Err(), connect.CodeUnauthenticated, cr.message)
			})
			t.Run("grpc/"+cr.name, func(t *testing.T) {
				conn := dialGRPC(t, e.d)
				s, err := openGRPCWatch(t.Context(), conn, cr.authorization, &attestationv1.WatchEventsRequest{AfterSeq: proto.Int64(0)})
				if err == nil {
					err = s.RecvMsg(&attestationv1.WatchEventsResponse{})
				}
				wantError(t, grpcError(err), connect.CodeUnauthenticated, cr.message)
			})
		}
	})

	t.Run("reflection", func(t *testing.T) {
		conn := dialGRPC(t, e.d)
		for _, c := range []struct {
			name, authorization string
			code                connect.Code
		}{
			{"no token", "", connect.CodeUnauthenticated},
			{"wrong token", bearer("nope"), connect.CodeUnauthenticated},
			{"admin token", bearer(daemontest.Token), connect.CodeUnknown},
		} {
			t.Run(c.name, func(t *testing.T) {
				services, err := listServices(t.Context(), conn, c.authorization)
				if c.code != connect.CodeUnknown {
					wantError(t, grpcError(err), c.code)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				want := []string{
					attestationv1connect.AgentServiceName,
					attestationv1connect.AuditServiceName,
					attestationv1connect.ConfigServiceName,
					attestationv1connect.EventServiceName,
					attestationv1connect.ExtensionServiceName,
					attestationv1connect.MachineServiceName,
					attestationv1connect.SchematicServiceName,
				}
				slices.Sort(services)
				if !slices.Equal(services, want) {
					t.Errorf("got services %v, want %v", services, want)
				}
			})
		}
	})

	t.Run("health", func(t *testing.T) {
		conn := dialGRPC(t, e.d)
		hc := grpc_health_v1.NewHealthClient(conn)
		for _, svc := range []string{"", attestationv1connect.MachineServiceName, attestationv1connect.AgentServiceName} {
			resp, err := hc.Check(t.Context(), &grpc_health_v1.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatalf("health check %q: %v", svc, err)
			}
			if resp.Status != grpc_health_v1.HealthCheckResponse_SERVING {
				t.Errorf("health check %q: got %s, want SERVING", svc, resp.Status)
			}
		}
	})

	t.Run("open endpoints", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := http.Get(e.d.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: got HTTP %d %s, want 200", path, resp.StatusCode, body)
			}
		}
	})

	// Agents do not hold operator tokens: Register and Attest are open
	// (the TPM proof is their authentication) and answer about the
	// request; WatchApproval, Heartbeat and IssueCertificate want a
	// session credential, and an operator token is not one.
	t.Run("agent", func(t *testing.T) {
		x := []byte("x")
		issueRequest := &attestationv1.IssueCertificateRequest{Csr: x, KeyPublic: x, CertifyInfo: x, CertifySignature: x}
		for _, name := range []string{"connect", "grpc"} {
			for _, c := range []struct {
				proc          string
				req           proto.Message
				authorization string
				code          connect.Code
				message       string
			}{
				{attestationv1connect.AgentServiceRegisterProcedure, &attestationv1.RegisterRequest{TpmAvailable: true}, "", connect.CodeInvalidArgument, "ek_public"},
				{attestationv1connect.AgentServiceAttestProcedure, &attestationv1.AttestRequest{}, "", connect.CodeInvalidArgument, "challenge_id"},
				{attestationv1connect.AgentServiceHeartbeatProcedure, &attestationv1.HeartbeatRequest{}, "", connect.CodeUnauthenticated, "session"},
				{attestationv1connect.AgentServiceHeartbeatProcedure, &attestationv1.HeartbeatRequest{}, bearer(daemontest.Token), connect.CodeUnauthenticated, "session"},
				{attestationv1connect.AgentServiceIssueCertificateProcedure, &attestationv1.IssueCertificateRequest{}, "", connect.CodeInvalidArgument, "csr"},
				{attestationv1connect.AgentServiceIssueCertificateProcedure, issueRequest, bearer(daemontest.Token), connect.CodeUnauthenticated, "session"},
			} {
				t.Run(fmt.Sprintf("%s%s/token=%v", name, c.proc, c.authorization != ""), func(t *testing.T) {
					_, err := newTransport(t, name, e.d, c.authorization).Call(t.Context(), c.proc, c.req)
					wantError(t, err, c.code, c.message)
				})
			}
		}
		for _, authorization := range []string{"", bearer(daemontest.Token), bearer("not-a-session")} {
			t.Run(fmt.Sprintf("connect WatchApproval/%q", authorization), func(t *testing.T) {
				c := attestationv1connect.NewAgentServiceClient(http.DefaultClient, e.d.URL)
				req := connect.NewRequest(&attestationv1.WatchApprovalRequest{})
				if authorization != "" {
					req.Header().Set("Authorization", authorization)
				}
				stream, err := c.WatchApproval(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				defer stream.Close()
				if stream.Receive() {
					t.Fatalf("got %s, want no message", text(stream.Msg()))
				}
				wantError(t, stream.Err(), connect.CodeUnauthenticated, "session")
			})
		}
		t.Run("grpc WatchApproval", func(t *testing.T) {
			conn := dialGRPC(t, e.d)
			s, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true}, attestationv1connect.AgentServiceWatchApprovalProcedure)
			if err == nil {
				if err = s.SendMsg(&attestationv1.WatchApprovalRequest{}); err == nil || errors.Is(err, io.EOF) {
					s.CloseSend()
					err = s.RecvMsg(&attestationv1.WatchApprovalResponse{})
				}
			}
			wantError(t, grpcError(err), connect.CodeUnauthenticated, "session")
		})
	})
}

// listServices asks gRPC reflection which services the server has.
func listServices(ctx context.Context, conn *grpc.ClientConn, authorization string) ([]string, error) {
	ctx, cancel := context.WithCancel(grpcContext(ctx, authorization))
	defer cancel()
	s, err := grpc_reflection_v1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// io.EOF from Send means the server ended the stream: Recv has why.
	if err := s.Send(&grpc_reflection_v1.ServerReflectionRequest{
		MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{},
	}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.Name)
	}
	return names, nil
}

// openGRPCWatch starts WatchEvents over gRPC and waits for the response
// headers, so that the watch is established when it returns.
func openGRPCWatch(ctx context.Context, conn *grpc.ClientConn, authorization string, req *attestationv1.WatchEventsRequest) (grpc.ClientStream, error) {
	s, err := conn.NewStream(grpcContext(ctx, authorization), &grpc.StreamDesc{StreamName: "WatchEvents", ServerStreams: true}, procWatch)
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := s.Header(); err != nil {
		return nil, err
	}
	return s, nil
}

// decode returns the typed payload of an event from the API.
func decode(t *testing.T, ev *attestationv1.Event) events.Event {
	t.Helper()
	payload, err := protojson.Marshal(ev.Payload)
	if err != nil {
		t.Fatal(err)
	}
	typed, err := events.Envelope{Seq: ev.Seq, ID: ev.Id, Type: events.Type(ev.Type), MachineID: ev.MachineId,
		EKFingerprint: ev.EkFingerprint, Time: ev.Time.AsTime(), Payload: payload}.Decode()
	if err != nil {
		t.Fatalf("decode event %d: %v", ev.Seq, err)
	}
	return typed
}

// TestApprove takes a machine from pre-registration through attestation to
// approval and checks the events and their typed payloads.
func TestApprove(t *testing.T) {
	e := newEnv(t)
	rest := e.transport(t, "rest")
	m := call[*attestationv1.RegisterMachineResponse](t, rest, procRegister, &attestationv1.RegisterMachineRequest{
		EkFingerprint: fingerprint(1), Macs: []string{"52:54:00:00:00:01"},
	}).Machine
	e.attest(t, m.Id)
	got := call[*attestationv1.GetMachineResponse](t, rest, procGet, &attestationv1.GetMachineRequest{Id: m.Id}).Machine
	if got.State != "attested" || got.FirstSeenAt == nil {
		t.Fatalf("after attestation: got state %q first_seen_at %v, want attested, set", got.State, got.FirstSeenAt)
	}
	approved := call[*attestationv1.ApproveMachineResponse](t, rest, procApprove, &attestationv1.ApproveMachineRequest{
		Id: m.Id, Role: "worker", Hostname: "node-1.example.com",
	}).Machine
	if approved.State != "provisioned" {
		t.Fatalf("ApproveMachine: got state %q, want provisioned", approved.State)
	}
	evs := call[*attestationv1.ListEventsResponse](t, rest, procEvents, &attestationv1.ListEventsRequest{Machine: m.Id}).Events
	if got, want := eventTypes(evs), "node.registered node.online node.provisioned"; got != want {
		t.Fatalf("events: got %s, want %s", got, want)
	}
	reg, ok := decode(t, evs[0]).(*events.Registered)
	if !ok || !reg.PreRegistered || reg.MAC != "52:54:00:00:00:01" || reg.MachineID != m.Id || reg.EKFingerprint != m.EkFingerprint {
		t.Errorf("registered payload: got %+v, want pre-registered with MAC 52:54:00:00:00:01 of machine %s", reg, m.Id)
	}
	online, ok := decode(t, evs[1]).(*events.Online)
	if !ok || online.FirstSeen.IsZero() || online.Role != "" {
		t.Errorf("online payload: got %+v, want first_seen set and no role yet", online)
	}
	prov, ok := decode(t, evs[2]).(*events.Provisioned)
	if !ok || prov.Hostname != "node-1.example.com" || prov.Role != "worker" {
		t.Errorf("provisioned payload: got %+v, want hostname node-1.example.com role worker", prov)
	}
	if !(evs[0].Seq < evs[1].Seq && evs[1].Seq < evs[2].Seq) {
		t.Errorf("got seqs %d %d %d, want increasing", evs[0].Seq, evs[1].Seq, evs[2].Seq)
	}
}

// TestAutoApprove attests pre-registered machines: those with a role and a
// hostname are approved in the same step.
func TestAutoApprove(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name           string
		role, hostname string
		state          string
		events         string
	}{
		{"role and hostname", "worker", "node-1", "provisioned", "node.registered node.online node.provisioned"},
		{"role only", "worker", "", "attested", "node.registered node.online"},
		{"hostname only", "", "node-3", "attested", "node.registered node.online"},
		{"neither", "", "", "attested", "node.registered node.online"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(i), Role: c.role, Hostname: c.hostname})
			e.attest(t, m.Id)
			got := call[*attestationv1.GetMachineResponse](t, e.admin, procGet, &attestationv1.GetMachineRequest{Id: m.Id}).Machine
			if got.State != c.state || (got.ApprovedAt != nil) != (c.state == "provisioned") {
				t.Errorf("got state %q approved_at %v, want %s", got.State, got.ApprovedAt, c.state)
			}
			evs := call[*attestationv1.ListEventsResponse](t, e.admin, procEvents, &attestationv1.ListEventsRequest{Machine: m.Id}).Events
			if got := eventTypes(evs); got != c.events {
				t.Fatalf("got events %s, want %s", got, c.events)
			}
			if c.state == "provisioned" {
				prov := decode(t, evs[2]).(*events.Provisioned)
				if prov.Role != c.role || prov.Hostname != c.hostname {
					t.Errorf("provisioned payload: got role %q hostname %q, want %q %q", prov.Role, prov.Hostname, c.role, c.hostname)
				}
			}
		})
	}
}

// watcher is a WatchEvents stream over one protocol.
type watcher interface {
	// next returns the next event, or nil when the stream ended cleanly.
	next() (*attestationv1.Event, error)
}

type connectWatcher struct {
	s *connect.ServerStreamForClient[attestationv1.WatchEventsResponse]
}

func (w connectWatcher) next() (*attestationv1.Event, error) {
	if w.s.Receive() {
		return w.s.Msg().Event, nil
	}
	return nil, w.s.Err()
}

type grpcWatcher struct{ s grpc.ClientStream }

func (w grpcWatcher) next() (*attestationv1.Event, error) {
	var resp attestationv1.WatchEventsResponse
	if err := w.s.RecvMsg(&resp); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	return resp.Event, nil
}

func openWatch(t *testing.T, proto string, d *daemontest.Daemon, req *attestationv1.WatchEventsRequest) watcher {
	t.Helper()
	switch proto {
	case "connect":
		c := attestationv1connect.NewEventServiceClient(http.DefaultClient, d.URL)
		r := connect.NewRequest(req)
		r.Header().Set("Authorization", bearer(daemontest.Token))
		s, err := c.WatchEvents(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		s.ResponseHeader() // waits until the watch is established
		return connectWatcher{s}
	case "grpc":
		s, err := openGRPCWatch(t.Context(), dialGRPC(t, d), bearer(daemontest.Token), req)
		if err != nil {
			t.Fatalf("open gRPC watch: %v", err)
		}
		return grpcWatcher{s}
	}
	t.Fatalf("unknown protocol %s", proto)
	return nil
}

// receive returns the next n events of w, failing after a timeout.
func receive(t *testing.T, w watcher, n int) []*attestationv1.Event {
	t.Helper()
	type result struct {
		ev  *attestationv1.Event
		err error
	}
	ch := make(chan result, 1)
	var out []*attestationv1.Event
	for range n {
		go func() {
			ev, err := w.next()
			ch <- result{ev, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil || r.ev == nil {
				t.Fatalf("after %d events: got end of stream (%v), want %d events", len(out), r.err, n)
			}
			out = append(out, r.ev)
		case <-time.After(10 * time.Second):
			t.Fatalf("after %d events: got nothing for 10s, want %d events", len(out), n)
		}
	}
	return out
}

func TestWatchEvents(t *testing.T) {
	for _, p := range []string{"connect", "grpc"} {
		t.Run(p, func(t *testing.T) {
			e := newEnv(t)
			old := e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(1)})

			live := openWatch(t, p, e.d, &attestationv1.WatchEventsRequest{})
			replay := openWatch(t, p, e.d, &attestationv1.WatchEventsRequest{AfterSeq: proto.Int64(0)})
			m := e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(2)})
			filtered := openWatch(t, p, e.d, &attestationv1.WatchEventsRequest{Machine: m.Id, AfterSeq: proto.Int64(0)})
			call[*attestationv1.RevokeMachineResponse](t, e.admin, procRevoke, &attestationv1.RevokeMachineRequest{Id: old.Id, Reason: "old"})
			call[*attestationv1.SetMachineRoleResponse](t, e.admin, procSetRole, &attestationv1.SetMachineRoleRequest{Id: m.Id, Role: "db"})
			all := call[*attestationv1.ListEventsResponse](t, e.admin, procEvents, &attestationv1.ListEventsRequest{}).Events

			for _, c := range []struct {
				name string
				w    watcher
				want []*attestationv1.Event
			}{
				{"started before the change", live, all[1:]},
				{"after_seq 0 replays", replay, all},
				{"one machine", filtered, []*attestationv1.Event{all[1], all[3]}},
			} {
				t.Run(c.name, func(t *testing.T) {
					got := receive(t, c.w, len(c.want))
					for i := range got {
						if !proto.Equal(got[i], c.want[i]) {
							t.Errorf("event %d: got %s, want %s", i, text(got[i]), text(c.want[i]))
						}
					}
				})
			}

			for _, c := range []struct {
				name, field string
				req         *attestationv1.WatchEventsRequest
			}{
				{"machine not a UUID", "machine", &attestationv1.WatchEventsRequest{Machine: "node-1"}},
				{"negative after_seq", "after_seq", &attestationv1.WatchEventsRequest{AfterSeq: proto.Int64(-1)}},
			} {
				t.Run(c.name, func(t *testing.T) {
					var err error
					switch p {
					case "connect":
						cl := attestationv1connect.NewEventServiceClient(http.DefaultClient, e.d.URL)
						r := connect.NewRequest(c.req)
						r.Header().Set("Authorization", bearer(daemontest.Token))
						s, serr := cl.WatchEvents(t.Context(), r)
						if serr != nil {
							t.Fatal(serr)
						}
						defer s.Close()
						for s.Receive() {
						}
						err = s.Err()
					case "grpc":
						var s grpc.ClientStream
						if s, err = openGRPCWatch(t.Context(), dialGRPC(t, e.d), bearer(daemontest.Token), c.req); err == nil {
							err = s.RecvMsg(&attestationv1.WatchEventsResponse{})
						}
						err = grpcError(err)
					}
					wantError(t, err, connect.CodeInvalidArgument, c.field)
				})
			}

			t.Run("ends when the daemon stops", func(t *testing.T) {
				done := make(chan error, 1)
				go func() {
					ev, err := live.next()
					if ev != nil {
						err = errors.New("got event " + ev.Type + ", want the end of the stream")
					}
					done <- err
				}()
				e.d.Stop(t)
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("got %v, want a clean end of stream", err)
					}
				case <-time.After(15 * time.Second):
					t.Fatal("stream still open 15s after the daemon stopped")
				}
			})
		})
	}
}

// TestMetrics scrapes /metrics after known traffic.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	f := e.fixture(t) // 4 registrations, 1 approval, 1 revocation over Connect
	rest := e.transport(t, "rest")
	call[*attestationv1.RegisterMachineResponse](t, rest, procRegister, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(5)})
	if _, err := rest.Call(t.Context(), procGet, &attestationv1.GetMachineRequest{Id: unknownID}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetMachine of an unknown machine: got %v, want not_found", err)
	}
	if _, err := newTransport(t, "grpc", e.d, "").Call(t.Context(), procGet, &attestationv1.GetMachineRequest{Id: f.registered.Id}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("GetMachine without a token: got %v, want unauthenticated", err)
	}
	resp, err := http.Get(e.d.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		fam, ok := families[name]
		if !ok {
			return 0, false
		}
	metrics:
		for _, m := range fam.Metric {
			have := map[string]string{}
			for _, l := range m.Label {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			switch fam.GetType() {
			case dto.MetricType_COUNTER:
				return m.Counter.GetValue(), true
			case dto.MetricType_GAUGE:
				return m.Gauge.GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
		return 0, false
	}
	// 5 machines were registered over the API, so 5 node.registered, plus
	// 2 node.online, 1 node.provisioned and 1 node.decommissioned.
	const eventsCommitted = 5 + 2 + 1 + 1
	for _, c := range []struct {
		name   string
		metric string
		labels map[string]string
		want   float64
	}{
		{"register ok", "attestation_api_requests_total", map[string]string{"procedure": procRegister, "code": "ok"}, 5},
		{"approve ok", "attestation_api_requests_total", map[string]string{"procedure": procApprove, "code": "ok"}, 1},
		{"get not found", "attestation_api_requests_total", map[string]string{"procedure": procGet, "code": "not_found"}, 1},
		{"get unauthenticated", "attestation_api_requests_total", map[string]string{"procedure": procGet, "code": "unauthenticated"}, 1},
		{"register latency", "attestation_api_request_duration_seconds", map[string]string{"procedure": procRegister}, 5},
		{"registered machines", "attestation_machines", map[string]string{"state": "registered"}, 2},
		{"attested machines", "attestation_machines", map[string]string{"state": "attested"}, 1},
		{"provisioned machines", "attestation_machines", map[string]string{"state": "provisioned"}, 1},
		{"decommissioned machines", "attestation_machines", map[string]string{"state": "decommissioned"}, 1},
		{"events committed", "attestation_events_committed", nil, eventsCommitted},
		{"commits fsynced", "attestation_database_synchronous", nil, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := value(c.metric, c.labels)
			if !ok {
				t.Fatalf("got no %s%v, want %v", c.metric, c.labels, c.want)
			}
			if got != c.want {
				t.Errorf("got %s%v = %v, want %v", c.metric, c.labels, got, c.want)
			}
		})
	}
}

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestInternalErrorsHidden breaks the database under the API: callers get
// a bare internal error, the log gets the cause.
func TestInternalErrorsHidden(t *testing.T) {
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	h, _, err := api.Handler(api.Options{
		Store:    st,
		Machines: machines.New(st, nil),
		Auth:     auth.NewStaticToken(daemontest.Token, "test"),
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	st.Close()

	evc := attestationv1connect.NewEventServiceClient(http.DefaultClient, srv.URL)
	watch := func(after *int64) error {
		req := connect.NewRequest(&attestationv1.WatchEventsRequest{AfterSeq: after})
		req.Header().Set("Authorization", bearer(daemontest.Token))
		s, err := evc.WatchEvents(t.Context(), req)
		if err != nil {
			return err
		}
		defer s.Close()
		for s.Receive() {
		}
		return s.Err()
	}
	cases := []struct {
		name string
		call func() error
	}{
		{"connect unary", func() error {
			_, err := newConnectTransport(srv.URL, bearer(daemontest.Token)).Call(t.Context(), procList, &attestationv1.ListMachinesRequest{})
			return err
		}},
		{"rest", func() error {
			_, err := (&restTransport{base: srv.URL, authorization: bearer(daemontest.Token)}).Call(t.Context(), procEvents, &attestationv1.ListEventsRequest{})
			return err
		}},
		{"stream from now", func() error { return watch(nil) }},
		{"stream replaying", func() error { return watch(proto.Int64(0)) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			wantError(t, err, connect.CodeInternal)
			var ce *connect.Error
			if errors.As(err, &ce) && ce.Message() != "internal error; see the daemon's log" {
				t.Errorf("got message %q, want only \"internal error; see the daemon's log\"", ce.Message())
			}
		})
	}
	if got := strings.Count(logs.String(), "database is closed"); got != len(cases) {
		t.Errorf("got the cause logged %d times, want %d:\n%s", got, len(cases), logs.String())
	}
}
