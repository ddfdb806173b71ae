package agentapi_test

// The whole enrollment with swtpm, a software TPM whose EK certificate is
// issued by a local CA (swtpm_setup --create-ek-cert): the daemon runs the
// verify policy with that CA as its roots bundle, so the certificate chain
// is verified for real; the agent talks to `swtpm socket` over TCP. The
// machine then gets a node certificate for a key in swtpm, and renews it.

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/agent/tpm/swtpmtest"
	"github.com/attestation/attestation/controlplane/config"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func TestSwtpm(t *testing.T) {
	spec, roots := swtpmtest.Start(t)
	tr, err := agenttpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agenttpm.New(tr, agenttpm.Options{})
	if err != nil {
		tr.Close()
		t.Fatalf("attester on swtpm: %v", err)
	}
	defer a.Close()
	if a.EK().Certificate == nil {
		t.Fatal("swtpm has no EK certificate in NV")
	}
	req := &attestationv1.RegisterRequest{
		EkPublic:      a.EK().Public,
		EkCertificate: a.EK().Certificate,
		AkPublic:      a.AK().Public,
		TpmAvailable:  true,
		Hardware:      &attestationv1.Hardware{Macs: []string{"52:54:00:00:00:01"}},
	}

	// A roots bundle without swtpm's CA refuses its EK certificate.
	otherCA := newCA(t, "Not swtpm's CA")
	h := start(t, func(c *config.Config) { c.EKPolicy, c.EKRoots = config.EKPolicyVerify, rootsDir(t, otherCA) })
	_, err = h.agent.Register(t.Context(), connect.NewRequest(req))
	wantCode(t, err, connect.CodePermissionDenied, "EK refused by policy verify")

	// With swtpm's CA, the whole loop.
	h = start(t, func(c *config.Config) { c.EKPolicy, c.EKRoots = config.EKPolicyVerify, roots })
	resp, err := h.agent.Register(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Register with swtpm's EK certificate: %v", err)
	}
	ch := resp.Msg
	secret, err := a.ActivateCredential(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	pcrs := make([]int, len(ch.Pcrs))
	for i, p := range ch.Pcrs {
		pcrs[i] = int(p)
	}
	q, sig, values, err := a.Quote(ch.Nonce, pcrs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	att := &attestationv1.AttestRequest{ChallengeId: ch.ChallengeId, Secret: secret, Quote: q, QuoteSignature: sig, PcrValues: map[uint32][]byte{}}
	for i, v := range values {
		att.PcrValues[uint32(i)] = v
	}
	attested, err := h.agent.Attest(t.Context(), connect.NewRequest(att))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	// A node certificate for a key in swtpm, certified by its AK.
	session := attested.Msg.SessionToken
	first, err := h.issueCertificate(t, session, certify(t, a, ch.MachineId))
	if err != nil {
		t.Fatalf("IssueCertificate: %v", err)
	}
	wantNodeCertificate(t, first, a, ch.MachineId, 24*time.Hour)
	h.approve(t, ch.MachineId, "worker", "swtpm-1")
	url := h.configURL(t, attested.Msg.SessionToken)
	if status, body := fetch(t, url); status != http.StatusOK || !strings.Contains(body, "swtpm-1") {
		t.Errorf("GET config: %d %q, want 200 naming swtpm-1", status, body)
	}
	// And its renewal.
	second, err := h.issueCertificate(t, session, certify(t, a, ch.MachineId))
	if err != nil {
		t.Fatalf("renew the certificate: %v", err)
	}
	wantNodeCertificate(t, second, a, ch.MachineId, 24*time.Hour)
	if got, want := h.eventTypes(t, ch.MachineId), "registered online provisioned configured cert_renewed"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}
