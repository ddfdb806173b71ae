package daemon_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/internal/pgtest"
	"github.com/attestation/attestation/internal/proctest"
	"github.com/attestation/attestation/internal/testenv"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// TestPostgres runs attestationd with --database postgres://... and
// enrolls a machine through it end to end (one without a TPM, which
// --allow-no-tpm accepts): registered, attested, approved by an
// operator, its config fetched once, an extension's table used, the
// events listed; then finds it all in the database.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs attestationd against PostgreSQL")
	}
	testenv.Integration(t, "attestationd on PostgreSQL: enrollment, approval, config, events, an extension's table")
	const password = "s3cret-never-logged"
	dsn := pgtest.DSN(t)
	goTool := testenv.LookPath(t, "go", "the Go toolchain")
	bin := filepath.Join(t.TempDir(), "attestationd")
	if out, err := exec.Command(goTool, "build", "-o", bin, "github.com/attestation/attestation/controlplane/cmd/attestationd").CombinedOutput(); err != nil {
		t.Fatalf("build attestationd: %v\n%s", err, out)
	}
	const token = "postgres-test-admin-token"
	addr := proctest.FreeAddr(t)
	// The server trusts the socket's peers: the password is only there
	// to be kept out of the logs.
	cmd := exec.Command(bin, "--listen", addr, "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--database", dsn+"&password="+password, "--allow-no-tpm")
	cmd.Env = append(os.Environ(), "ATTESTATION_ADMIN_TOKEN="+token, "ATTESTATION_LOG_FORMAT=text")
	url, output := proctest.StartOutput(t, cmd, addr)

	ctx := t.Context()
	agent := attestationv1connect.NewAgentServiceClient(http.DefaultClient, url)
	reg, err := agent.Register(ctx, connect.NewRequest(&attestationv1.RegisterRequest{
		Hardware: &attestationv1.Hardware{SmbiosUuid: "4c4c4544-0000-0000-0000-0000000000bb", Macs: []string{"52:54:00:00:00:bb"}},
	}))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	att, err := agent.Attest(ctx, connect.NewRequest(&attestationv1.AttestRequest{ChallengeId: reg.Msg.ChallengeId}))
	if err != nil || att.Msg.State != "attested" {
		t.Fatalf("Attest: %v, %v; want attested", att, err)
	}
	id := reg.Msg.MachineId
	op := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
	machines := attestationv1connect.NewMachineServiceClient(http.DefaultClient, url, op)
	if _, err := machines.ApproveMachine(ctx, connect.NewRequest(&attestationv1.ApproveMachineRequest{Id: id, Role: "worker", Hostname: "pg-node-1"})); err != nil {
		t.Fatalf("ApproveMachine: %v", err)
	}

	// The agent's watch hands out the one-time config URL; it works once.
	configURL := watchConfigURL(t, url, att.Msg.SessionToken)
	for i, want := range []int{http.StatusOK, http.StatusGone} {
		resp, err := http.Get(configURL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("config fetch %d: HTTP %d, want %d", i+1, resp.StatusCode, want)
		}
	}

	// The tags extension's table, created by its PostgreSQL migrations.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/api/v1/tags/machines/"+id+"/tags", strings.NewReader(`{"key":"rack","value":"r7"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("tag the machine: HTTP %d %s, want 201", resp.StatusCode, body)
	}

	evs, err := attestationv1connect.NewEventServiceClient(http.DefaultClient, url, op).
		ListEvents(ctx, connect.NewRequest(&attestationv1.ListEventsRequest{Machine: id}))
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs.Msg.Events {
		types = append(types, strings.TrimPrefix(e.Type, "node."))
	}
	if got, want := strings.Join(types, " "), "registered online provisioned configured"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}

	logs := output()
	if !strings.Contains(logs, "msg=\"database ready\" engine=postgres") || !strings.Contains(logs, "password=xxxxx") {
		t.Errorf("the log does not say the database is PostgreSQL, its password redacted:\n%s", logs)
	}
	for _, bad := range []string{password, "extension failed to load"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the log holds %q:\n%s", bad, logs)
		}
	}

	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := st.GetMachine(ctx, id)
	if err != nil || m.State != "provisioned" || m.Hostname != "pg-node-1" || m.ConfiguredAt.IsZero() {
		t.Errorf("machine in the database: %+v (%v), want provisioned, pg-node-1, configured", m, err)
	}
}
