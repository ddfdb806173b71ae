//go:build cgo

package agent_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/agent"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/pki"
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

// TestNodeCertificateMutualTLS: against a daemon serving TLS, the agent
// gets its node certificate right after attesting, its session ends, and
// it is approved, fetches its config and heartbeats with the certificate
// (mTLS; the key in the TPM); revoked, its next heartbeat is refused.
func TestNodeCertificateMutualTLS(t *testing.T) {
	dl := newLogs(t)
	d := startDaemon(t, daemontest.Options{Logger: dl.logger()}, map[string]any{"tls_self_signed": true})
	if !strings.HasPrefix(d.URL, "https://") {
		t.Fatalf("daemon URL %s: want https", d.URL)
	}
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, CAFile: d.CAFile, ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()})

	issued := l.wait("certificate issued", 1, time.Minute)
	id := issued["machine"]
	ended := dl.wait("session ended: the agent calls with its node certificate from now on", 1, 10*time.Second)
	if ended["serial"] != issued["serial"] {
		t.Errorf("session ended with certificate %s, want %s", ended["serial"], issued["serial"])
	}
	approve(t, d, id, "node-1.lab.example")
	l.wait("config written", 1, 30*time.Second)
	// Without a session, only the certificate can carry these.
	l.wait("heartbeat", 2, 30*time.Second)
	if n := dl.count("node certificate refused: machine decommissioned"); n != 0 {
		t.Fatalf("%d certificates refused before the revocation", n)
	}

	if _, err := machines(d).RevokeMachine(context.Background(), operator(&attestationv1.RevokeMachineRequest{Id: id, Reason: "retired"})); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	refused := dl.wait("node certificate refused: machine decommissioned", 1, 30*time.Second)
	if refused["machine"] != id || refused["reason"] != "retired" {
		t.Errorf("refusal %v, want machine %s, reason retired", refused, id)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("agent.Run did not return within 30s of cancel")
	}
}

// TestNodeCertificateAfterCARotation: the daemon's CA is replaced (the
// agents' bundle holding both, as docs/design.md says); the agent's
// certificate of the old CA is refused in the handshake, dropped, and the
// agent attests again and gets one of the new CA.
func TestNodeCertificateAfterCARotation(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, daemontest.Options{DataDir: dir}, map[string]any{"tls_self_signed": true})
	addr := d.Addr.String()
	nextDir := t.TempDir()
	next, _, err := pki.LoadOrCreate(nextDir)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(d.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bundle, append(old, next.CertPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newLogs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAgent(t, ctx, agent.Config{Server: d.URL, CAFile: bundle, ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()})
	first := l.wait("certificate issued", 1, time.Minute)
	approve(t, d, first["machine"], "node-1")
	l.wait("config written", 1, 30*time.Second)
	l.wait("heartbeat", 1, 30*time.Second)

	// The rotation: the new CA's files in the data dir, the server
	// certificate issued again by it.
	d.Stop(t)
	for _, f := range []string{pki.CertFile, pki.KeyFile} {
		if err := os.Rename(filepath.Join(nextDir, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, "tls.crt"))
	os.Remove(filepath.Join(dir, "tls.key"))
	d2 := startDaemon(t, daemontest.Options{DataDir: dir}, map[string]any{"tls_self_signed": true, "listen": addr})

	l.wait("node certificate refused by the control plane: dropped; attesting again will get a new one", 1, time.Minute)
	second := l.wait("certificate issued", 2, time.Minute)
	if second["serial"] == first["serial"] {
		t.Errorf("the new certificate has the old serial %s", first["serial"])
	}
	beats := l.count("heartbeat")
	l.wait("heartbeat", beats+1, 30*time.Second)
	if _, err := machines(d2).GetMachine(context.Background(), operator(&attestationv1.GetMachineRequest{Id: first["machine"]})); err != nil {
		t.Errorf("the daemon with the new CA: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("agent.Run did not return within 30s of cancel")
	}
}
