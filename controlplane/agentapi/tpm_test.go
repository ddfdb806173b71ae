//go:build cgo

package agentapi_test

// The agent side of these tests is the agent's own TPM package on the
// in-process TPM simulator: one per process, so no test here runs in
// parallel, and each closes the simulator it opened.

import (
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-tpm/tpm2/transport"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// boot opens a simulated TPM (spec "simulator" or "simulator:SEED") and
// the agent's Attester on it, closed when the test ends.
func boot(t *testing.T, spec string) *agenttpm.Attester {
	t.Helper()
	a, _ := bootTPM(t, spec)
	return a
}

// bootTPM is boot that also returns the TPM, for the test's own commands
// (keys the agent would not make) until the test ends.
func bootTPM(t *testing.T, spec string) (*agenttpm.Attester, transport.TPM) {
	t.Helper()
	tr, err := agenttpm.Open(spec)
	if err != nil {
		t.Fatalf("open TPM %s: %v", spec, err)
	}
	a, err := agenttpm.New(tr, agenttpm.Options{})
	if err != nil {
		tr.Close()
		t.Fatalf("attester: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a, tr
}

// registration is what the agent sends.
func registration(a *agenttpm.Attester, hw *attestationv1.Hardware) *attestationv1.RegisterRequest {
	if hw == nil {
		hw = &attestationv1.Hardware{SmbiosUuid: "4c4c4544-0000-1111-2222-333344445555", Macs: []string{"52:54:00:12:34:56"}, Serial: "SN1", Product: "Test Board"}
	}
	return &attestationv1.RegisterRequest{
		EkPublic:      a.EK().Public,
		EkCertificate: a.EK().Certificate,
		AkPublic:      a.AK().Public,
		Hardware:      hw,
		AgentVersion:  "test",
		TpmAvailable:  true,
	}
}

func (h *harness) register(t *testing.T, req *attestationv1.RegisterRequest) *attestationv1.RegisterResponse {
	t.Helper()
	resp, err := h.agent.Register(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return resp.Msg
}

// answer is what the agent does with a challenge: activate the credential
// and quote the requested PCRs over the nonce.
func answer(t *testing.T, a *agenttpm.Attester, ch *attestationv1.RegisterResponse) *attestationv1.AttestRequest {
	t.Helper()
	secret, err := a.ActivateCredential(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	return &attestationv1.AttestRequest{ChallengeId: ch.ChallengeId, Secret: secret}
}

// quote adds a quote over the challenge's nonce and PCRs to req.
func quote(t *testing.T, a *agenttpm.Attester, ch *attestationv1.RegisterResponse, req *attestationv1.AttestRequest) *attestationv1.AttestRequest {
	t.Helper()
	pcrs := make([]int, len(ch.Pcrs))
	for i, p := range ch.Pcrs {
		pcrs[i] = int(p)
	}
	q, sig, values, err := a.Quote(ch.Nonce, pcrs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	req.Quote, req.QuoteSignature = q, sig
	req.PcrValues = map[uint32][]byte{}
	for i, v := range values {
		req.PcrValues[uint32(i)] = v
	}
	return req
}

func (h *harness) attest(t *testing.T, req *attestationv1.AttestRequest) (*attestationv1.AttestResponse, error) {
	t.Helper()
	resp, err := h.agent.Attest(t.Context(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// enroll registers and attests, failing the test on any error.
func (h *harness) enroll(t *testing.T, a *agenttpm.Attester, hw *attestationv1.Hardware) (*attestationv1.RegisterResponse, *attestationv1.AttestResponse) {
	t.Helper()
	ch := h.register(t, registration(a, hw))
	resp, err := h.attest(t, quote(t, a, ch, answer(t, a, ch)))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	return ch, resp
}
