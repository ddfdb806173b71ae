package agentapi_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// issueCertificate calls IssueCertificate with a session and what the
// agent's node key made.
func (h *harness) issueCertificate(t *testing.T, session string, r *agenttpm.CertificateRequest) (*attestationv1.IssueCertificateResponse, error) {
	t.Helper()
	req := connect.NewRequest(&attestationv1.IssueCertificateRequest{
		Csr: r.CSR, KeyPublic: r.KeyPublic, CertifyInfo: r.CertifyInfo, CertifySignature: r.CertifySignature,
	})
	if session != "" {
		req.Header().Set("Authorization", "Bearer "+session)
	}
	resp, err := h.agent.IssueCertificate(t.Context(), req)
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// certify has the agent certify its node key for a new CSR.
func certify(t *testing.T, a *agenttpm.Attester, machineID string) *agenttpm.CertificateRequest {
	t.Helper()
	k, err := a.NodeKey()
	if err != nil {
		t.Fatalf("NodeKey: %v", err)
	}
	r, err := k.CertificateRequest(machineID)
	if err != nil {
		t.Fatalf("CertificateRequest: %v", err)
	}
	return r
}

// wantNodeCertificate checks a node certificate: issued by the CA the
// response names to the node key, for client authentication, naming the
// machine and its EK, valid for lifetime (and the CA's backdating), to be
// renewed two thirds of the way. It returns the certificate.
func wantNodeCertificate(t *testing.T, resp *attestationv1.IssueCertificateResponse, a *agenttpm.Attester, machineID string, lifetime time.Duration) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(resp.Certificate)
	if err != nil {
		t.Fatalf("certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(resp.CaCertificate)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the certificate does not verify as a client certificate of the CA: %v", err)
	}
	k, err := a.NodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustPKIX(t, cert.PublicKey), mustPKIX(t, k.Public())) {
		t.Error("the certificate is not for the node key")
	}
	var uris []string
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	want := []string{"urn:attestation:ek:" + a.EK().Fingerprint, "urn:attestation:machine:" + machineID}
	if strings.Join(uris, " ") != strings.Join(want, " ") {
		t.Errorf("SAN URIs %v, want %v", uris, want)
	}
	if got := fmt.Sprintf("%x", cert.SerialNumber); got != resp.Serial {
		t.Errorf("serial %s in the response, %s in the certificate", resp.Serial, got)
	}
	notAfter := resp.NotAfter.AsTime()
	if !notAfter.Equal(cert.NotAfter) {
		t.Errorf("not_after %s, the certificate says %s", notAfter, cert.NotAfter)
	}
	if d := cert.NotAfter.Sub(cert.NotBefore); d < lifetime || d > lifetime+10*time.Minute {
		t.Errorf("certificate valid for %s, want %s (and a few minutes of backdating)", d, lifetime)
	}
	renewIn, left := resp.RenewAfter.AsTime().Sub(time.Now()), time.Until(notAfter)
	if renewIn < left/2 || renewIn > left*3/4 {
		t.Errorf("renew in %s of the %s left, want two thirds", renewIn, left)
	}
	return cert
}

func mustPKIX(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// logs collects a daemon's log lines.
type logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logs) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
