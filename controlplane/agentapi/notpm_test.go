package agentapi_test

import (
	"testing"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/config"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func noTPM(uuid string) *attestationv1.RegisterRequest {
	return &attestationv1.RegisterRequest{Hardware: &attestationv1.Hardware{SmbiosUuid: uuid, Macs: []string{"52:54:00:aa:bb:cc"}}}
}

// TestNoTPMRefused: by default a machine without a TPM is refused, with
// the setting that would accept it named.
func TestNoTPMRefused(t *testing.T) {
	h := start(t, nil)
	_, err := h.agent.Register(t.Context(), connect.NewRequest(noTPM("4c4c4544-0000-0000-0000-000000000001")))
	wantCode(t, err, connect.CodePermissionDenied, "no TPM", "--allow-no-tpm")
}

// TestNoTPMAllowed: where policy allows it, a machine without a TPM
// enrolls by answering with the challenge ID alone; it is the same
// machine on every boot (by SMBIOS UUID) and says it has no TPM.
func TestNoTPMAllowed(t *testing.T) {
	h := start(t, func(c *config.Config) { c.AllowNoTPM = true })
	req := noTPM("4c4c4544-0000-0000-0000-000000000002")
	reg, err := h.agent.Register(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if len(reg.Msg.CredentialBlob) != 0 || len(reg.Msg.Nonce) != 0 {
		t.Errorf("challenge for a machine without TPM carries a credential or nonce: %v", reg.Msg)
	}
	_, err = h.agent.Attest(t.Context(), connect.NewRequest(&attestationv1.AttestRequest{ChallengeId: reg.Msg.ChallengeId, Secret: []byte("x")}))
	wantCode(t, err, connect.CodePermissionDenied, "without a TPM")

	reg, err = h.agent.Register(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Register again: %v", err)
	}
	att, err := h.agent.Attest(t.Context(), connect.NewRequest(&attestationv1.AttestRequest{ChallengeId: reg.Msg.ChallengeId}))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if att.Msg.State != "attested" || att.Msg.SessionToken == "" {
		t.Errorf("Attest: %v, want attested with a session", att.Msg)
	}
	m := h.machine(t, reg.Msg.MachineId)
	if m.TpmAvailable || m.State != "attested" {
		t.Errorf("machine %v: want attested without a TPM", m)
	}
	if got, want := h.eventTypes(t, m.Id), "registered online"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	p := h.eventList(t, m.Id)[0].Payload.AsMap()
	if p["tpm_available"] != false {
		t.Errorf("node.registered payload %v: want tpm_available false", p)
	}

	_, err = h.agent.Register(t.Context(), connect.NewRequest(&attestationv1.RegisterRequest{}))
	wantCode(t, err, connect.CodeInvalidArgument, "SMBIOS UUID or a MAC")
}
