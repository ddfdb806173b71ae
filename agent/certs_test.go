//go:build cgo

package agent_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/agent"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// TestNodeCertificateRenewal: after attesting, the agent gets a node
// certificate and renews it at two thirds of its lifetime (three seconds
// here), each renewal emitting node.cert_renewed with both serials; once
// the machine is revoked, its renewal is refused and the agent says so.
func TestNodeCertificateRenewal(t *testing.T) {
	d := startDaemon(t, daemontest.Options{}, map[string]any{"node_cert_lifetime": "3s"})
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()})

	issued := l.wait("certificate issued", 1, time.Minute)
	id := issued["machine"]
	renewed := l.wait("certificate renewed", 1, 30*time.Second)
	if renewed["serial"] == issued["serial"] {
		t.Fatalf("renewed with the same serial %s", issued["serial"])
	}
	evs, err := attestationv1connect.NewEventServiceClient(http.DefaultClient, d.URL).ListEvents(context.Background(),
		operator(&attestationv1.ListEventsRequest{Machine: id, Type: "node.cert_renewed"}))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range evs.Msg.GetEvents() {
		p := e.GetPayload().AsMap()
		if p["serial"] == renewed["serial"] && p["previous_serial"] == issued["serial"] {
			found = true
		}
	}
	if !found {
		t.Errorf("no node.cert_renewed from %s to %s among %v", issued["serial"], renewed["serial"], evs.Msg.GetEvents())
	}

	if _, err := machines(d).RevokeMachine(context.Background(), operator(&attestationv1.RevokeMachineRequest{Id: id, Reason: "retired"})); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	refused := l.wait("certificate renewal refused", 1, 30*time.Second)
	if refused["code"] != connect.CodeFailedPrecondition.String() {
		t.Errorf("renewal refused with %s, want %s", refused["code"], connect.CodeFailedPrecondition)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("agent.Run did not return within 30s of cancel")
	}
}
