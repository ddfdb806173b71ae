//go:build cgo

package agentapi_test

// mTLS with the node certificate: after a certificate is issued over TLS
// the session ends and the agent calls with the certificate, whose key
// the TPM (the simulator) holds; revoking the machine stops it at once.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/controlplane/config"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// certClient is an agent API client over TLS presenting cert, whose key
// is the node key in the TPM.
func certClient(t *testing.T, h *harness, cert tls.Certificate) attestationv1connect.AgentServiceClient {
	t.Helper()
	cfg := h.d.TLSConfig(t)
	cfg.Certificates = []tls.Certificate{cert}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return attestationv1connect.NewAgentServiceClient(&http.Client{Transport: tr}, h.d.URL)
}

// nodeTLSCertificate is a TLS client certificate of the DER leaf with the
// TPM's node key.
func nodeTLSCertificate(t *testing.T, a *agenttpm.Attester, der []byte) tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	key, err := a.NodeKey()
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf,
		SupportedSignatureAlgorithms: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}}
}

func TestMutualTLS(t *testing.T) {
	h := start(t, func(c *config.Config) { c.TLSSelfSigned = true })
	a := boot(t, "simulator")
	ch, attested := h.enroll(t, a, nil)
	id := ch.MachineId

	issued, err := h.issueCertificate(t, attested.SessionToken, certify(t, a, id))
	if err != nil {
		t.Fatalf("IssueCertificate over TLS: %v", err)
	}
	// The session served the steps before the certificate, and no more.
	_, err = heartbeat(t.Context(), h, attested.SessionToken)
	wantCode(t, err, connect.CodeUnauthenticated, "session")

	agent := certClient(t, h, nodeTLSCertificate(t, a, issued.Certificate))
	before := h.machine(t, id).LastHeartbeatAt.AsTime()
	time.Sleep(10 * time.Millisecond)
	if _, err := agent.Heartbeat(t.Context(), connect.NewRequest(&attestationv1.HeartbeatRequest{})); err != nil {
		t.Fatalf("Heartbeat with the node certificate: %v", err)
	}
	if after := h.machine(t, id).LastHeartbeatAt.AsTime(); !after.After(before) {
		t.Errorf("last heartbeat %s, want after %s", after, before)
	}
	stream, err := agent.WatchApproval(t.Context(), connect.NewRequest(&attestationv1.WatchApprovalRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || stream.Msg().State != "attested" {
		t.Fatalf("WatchApproval with the certificate: %v, %v; want attested", stream.Msg(), stream.Err())
	}
	stream.Close()

	// Renewal with the certificate, no session.
	r := certify(t, a, id)
	renewed, err := agent.IssueCertificate(t.Context(), connect.NewRequest(&attestationv1.IssueCertificateRequest{
		Csr: r.CSR, KeyPublic: r.KeyPublic, CertifyInfo: r.CertifyInfo, CertifySignature: r.CertifySignature}))
	if err != nil {
		t.Fatalf("renewal with the certificate: %v", err)
	}
	if renewed.Msg.Serial == issued.Serial {
		t.Error("the renewal has the first serial")
	}
	// The connection still presents the first one, superseded but valid.
	if _, err := agent.Heartbeat(t.Context(), connect.NewRequest(&attestationv1.HeartbeatRequest{})); err != nil {
		t.Errorf("Heartbeat with the superseded certificate: %v", err)
	}

	// Revoked: the certificates stop working at once, not at expiry.
	if _, err := h.machines.RevokeMachine(t.Context(), connect.NewRequest(&attestationv1.RevokeMachineRequest{Id: id, Reason: "stolen"})); err != nil {
		t.Fatal(err)
	}
	for _, der := range [][]byte{issued.Certificate, renewed.Msg.Certificate} {
		c := certClient(t, h, nodeTLSCertificate(t, a, der))
		_, err := c.Heartbeat(t.Context(), connect.NewRequest(&attestationv1.HeartbeatRequest{}))
		wantCode(t, err, connect.CodeUnauthenticated, "no longer works", "decommissioned", "stolen")
	}
	_, err = agent.IssueCertificate(t.Context(), connect.NewRequest(&attestationv1.IssueCertificateRequest{
		Csr: r.CSR, KeyPublic: r.KeyPublic, CertifyInfo: r.CertifyInfo, CertifySignature: r.CertifySignature}))
	wantCode(t, err, connect.CodeFailedPrecondition, "certificate renewal refused", "decommissioned")

	// Reinstated: the revoked certificate proves nothing (not even that
	// the machine is decommissioned); a fresh attestation's session does,
	// and gets a certificate again.
	if _, err := h.machines.ReinstateMachine(t.Context(), connect.NewRequest(&attestationv1.ReinstateMachineRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	_, err = agent.Heartbeat(t.Context(), connect.NewRequest(&attestationv1.HeartbeatRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "no session credential")
	_, again := h.enroll(t, a, nil)
	r = certify(t, a, id)
	req := connect.NewRequest(&attestationv1.IssueCertificateRequest{
		Csr: r.CSR, KeyPublic: r.KeyPublic, CertifyInfo: r.CertifyInfo, CertifySignature: r.CertifySignature})
	req.Header().Set("Authorization", "Bearer "+again.SessionToken)
	reissued, err := agent.IssueCertificate(t.Context(), req)
	if err != nil {
		t.Fatalf("a certificate after reinstating, over a connection presenting the revoked one: %v", err)
	}
	fresh := certClient(t, h, nodeTLSCertificate(t, a, reissued.Msg.Certificate))
	if _, err := fresh.Heartbeat(t.Context(), connect.NewRequest(&attestationv1.HeartbeatRequest{})); err != nil {
		t.Errorf("Heartbeat with the certificate issued after reinstating: %v", err)
	}
}

// TestForeignClientCertificate: a client certificate of another CA fails
// the TLS handshake.
func TestForeignClientCertificate(t *testing.T) {
	h := start(t, func(c *config.Config) { c.TLSSelfSigned = true })
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "intruder"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c := certClient(t, h, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	_, err = c.Heartbeat(t.Context(), connect.NewRequest(&attestationv1.HeartbeatRequest{}))
	if err == nil {
		t.Fatal("a certificate of another CA was let in")
	}
}

// TestSessionKeptOverPlaintext: a certificate issued to an agent calling
// over loopback plaintext leaves its session working (it has no TLS to
// present the certificate on).
func TestSessionKeptOverPlaintext(t *testing.T) {
	h := start(t, func(c *config.Config) { c.TLSSelfSigned = true })
	h.agent = attestationv1connect.NewAgentServiceClient(http.DefaultClient, h.d.PlainURL)
	a := boot(t, "simulator")
	ch, attested := h.enroll(t, a, nil)
	if _, err := h.issueCertificate(t, attested.SessionToken, certify(t, a, ch.MachineId)); err != nil {
		t.Fatal(err)
	}
	if _, err := heartbeat(t.Context(), h, attested.SessionToken); err != nil {
		t.Errorf("session after a certificate issued over plaintext: %v", err)
	}
}
