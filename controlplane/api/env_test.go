package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// env is a running daemon, an admin client, and a second store handle on
// the daemon's database standing in for the agent side (attestation is not
// served by the API yet).
type env struct {
	d     *daemontest.Daemon
	admin transport
	svc   *machines.Service
}

func newEnv(t *testing.T) *env {
	t.Helper()
	d := daemontest.Start(t, daemontest.Options{})
	st, err := store.Open(t.Context(), d.DatabasePath())
	if err != nil {
		t.Fatalf("open second store handle: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return &env{d: d, admin: newConnectTransport(d.URL, bearer(daemontest.Token)), svc: machines.New(st, nil)}
}

// transport returns the named transport authenticated as admin.
func (e *env) transport(t *testing.T, name string) transport {
	return newTransport(t, name, e.d, bearer(daemontest.Token))
}

// fingerprint returns a distinct valid EK fingerprint for each n.
func fingerprint(n int) string {
	return fmt.Sprintf("%064x", n+0xe0000)
}

// register pre-registers a machine through the API.
func (e *env) register(t *testing.T, r *attestationv1.RegisterMachineRequest) *attestationv1.Machine {
	t.Helper()
	return call[*attestationv1.RegisterMachineResponse](t, e.admin, procRegister, r).Machine
}

// attest records a successful attestation, as the agent side will.
func (e *env) attest(t *testing.T, id string) {
	t.Helper()
	if _, err := e.svc.Attested(t.Context(), id); err != nil {
		t.Fatalf("attest %s: %v", id, err)
	}
}

// fixture is one machine in each state.
type fixture struct {
	registered, attested, provisioned, decommissioned *attestationv1.Machine
}

func (e *env) fixture(t *testing.T) fixture {
	t.Helper()
	var f fixture
	f.registered = e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(1), Role: "worker"})
	f.attested = e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(2)})
	e.attest(t, f.attested.Id)
	f.provisioned = e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(3)})
	e.attest(t, f.provisioned.Id)
	call[*attestationv1.ApproveMachineResponse](t, e.admin, procApprove,
		&attestationv1.ApproveMachineRequest{Id: f.provisioned.Id, Role: "worker", Hostname: "node-3"})
	f.decommissioned = e.register(t, &attestationv1.RegisterMachineRequest{EkFingerprint: fingerprint(4)})
	call[*attestationv1.RevokeMachineResponse](t, e.admin, procRevoke,
		&attestationv1.RevokeMachineRequest{Id: f.decommissioned.Id, Reason: "retired"})
	return f
}

// snapshot is everything the API shows: every machine and every event.
type snapshot struct {
	machines *attestationv1.ListMachinesResponse
	events   *attestationv1.ListEventsResponse
}

func (e *env) snapshot(t *testing.T) snapshot {
	t.Helper()
	return snapshot{
		machines: call[*attestationv1.ListMachinesResponse](t, e.admin, procList, &attestationv1.ListMachinesRequest{PageSize: 1000}),
		events:   call[*attestationv1.ListEventsResponse](t, e.admin, procEvents, &attestationv1.ListEventsRequest{PageSize: 1000}),
	}
}

// unchanged fails the test when the API shows anything different from before.
func (e *env) unchanged(t *testing.T, before snapshot) {
	t.Helper()
	after := e.snapshot(t)
	if !proto.Equal(before.machines, after.machines) {
		t.Errorf("machines changed:\ngot  %s\nwant %s", text(after.machines), text(before.machines))
	}
	if !proto.Equal(before.events, after.events) {
		t.Errorf("events changed:\ngot  %s\nwant %s", text(after.events), text(before.events))
	}
}

func text(m proto.Message) string { return prototext.Format(m) }

// eventTypes lists the types of evs in order.
func eventTypes(evs []*attestationv1.Event) string {
	var ts []string
	for _, e := range evs {
		ts = append(ts, e.Type)
	}
	return strings.Join(ts, " ")
}

// schematic creates a schematic through the REST API and returns its ID.
func (e *env) schematic(t *testing.T, doc string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.d.URL+"/api/v1/schematics", strings.NewReader(`{"schematic": `+doc+`}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.ID == "" {
		t.Fatalf("create schematic %s: HTTP %d, %v", doc, resp.StatusCode, err)
	}
	return out.ID
}
