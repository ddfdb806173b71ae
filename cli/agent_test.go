//go:build cgo

package cli_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// simAgent is an agent on the in-process TPM simulator, doing what the
// agent does over the real API.
type simAgent struct {
	tpm     *agenttpm.Attester
	client  attestationv1connect.AgentServiceClient
	id      string
	session string
}

func bootAgent(t *testing.T, d *daemontest.Daemon, spec string) *simAgent {
	t.Helper()
	tr, err := agenttpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agenttpm.New(tr, agenttpm.Options{})
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return &simAgent{tpm: a, client: attestationv1connect.NewAgentServiceClient(http.DefaultClient, d.URL)}
}

// enroll registers, activates the credential, quotes and attests.
func (s *simAgent) enroll(t *testing.T, smbiosUUID string) {
	t.Helper()
	ctx := t.Context()
	reg, err := s.client.Register(ctx, connect.NewRequest(&attestationv1.RegisterRequest{
		EkPublic:     s.tpm.EK().Public,
		AkPublic:     s.tpm.AK().Public,
		TpmAvailable: true,
		Hardware:     &attestationv1.Hardware{SmbiosUuid: smbiosUUID, Macs: []string{"52:54:00:12:34:56"}},
	}))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	ch := reg.Msg
	secret, err := s.tpm.ActivateCredential(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	var pcrs []int
	for _, p := range ch.Pcrs {
		pcrs = append(pcrs, int(p))
	}
	q, sig, values, err := s.tpm.Quote(ch.Nonce, pcrs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	req := &attestationv1.AttestRequest{ChallengeId: ch.ChallengeId, Secret: secret, Quote: q, QuoteSignature: sig, PcrValues: map[uint32][]byte{}}
	for i, v := range values {
		req.PcrValues[uint32(i)] = v
	}
	att, err := s.client.Attest(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	s.id, s.session = att.Msg.MachineId, att.Msg.SessionToken
}

// config waits for approval and fetches the config once.
func (s *simAgent) config(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	req := connect.NewRequest(&attestationv1.WatchApprovalRequest{})
	req.Header().Set("Authorization", "Bearer "+s.session)
	stream, err := s.client.WatchApproval(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for stream.Receive() {
		if url := stream.Msg().ConfigUrl; url != "" {
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
			}
			return string(b)
		}
	}
	t.Fatalf("the watch ended without a config URL: %v", stream.Err())
	return ""
}

// TestAgentScenario: an agent (TPM simulator) registers and attests, the
// operator approves it with the CLI, the agent fetches its config, and the
// CLI shows the events in order.
func TestAgentScenario(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.EKPolicy = config.EKPolicyAny }})
	ok, _ := cliFor(t, d)
	agent := bootAgent(t, d, "simulator")
	agent.enroll(t, "4c4c4544-0000-1111-2222-333344445555")

	got := decode[[]machineJSON](t, "machines list", ok("machines", "list", "--state", "attested", "-o", "json"))
	if len(got) != 1 || got[0].ID != agent.id || got[0].EKFingerprint != agent.tpm.EK().Fingerprint {
		t.Fatalf("attested machines %+v, want the agent's", got)
	}
	ok("machines", "approve", agent.id, "--role", "worker", "--hostname", "node-1")
	if cfg := agent.config(t); !strings.Contains(cfg, "hostname: node-1") {
		t.Errorf("config %q, want the default config naming node-1", cfg)
	}

	evs := decode[[]eventJSON](t, "events list", ok("events", "list", "--machine", agent.id, "-o", "json"))
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got, want := strings.Join(types, " "), "node.registered node.online node.provisioned node.configured"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if out := ok("machines", "show", agent.id); !strings.Contains(out, "Config fetched:") || !strings.Contains(out, "Last attested:") {
		t.Errorf("machines show:\n%s\nwant the attestation and config fetch times", out)
	}
}

// TestConflictShown: machines show says when a machine's SMBIOS UUID was
// seen with another EK.
func TestConflictShown(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.EKPolicy = config.EKPolicyAny }})
	ok, _ := cliFor(t, d)
	first := bootAgent(t, d, "simulator:1")
	first.enroll(t, "4c4c4544-0000-0000-0000-00000000c0de")
	first.tpm.Close()
	second := bootAgent(t, d, "simulator:2")
	second.enroll(t, "4c4c4544-0000-0000-0000-00000000c0de")

	out := ok("machines", "show", second.id)
	if !strings.Contains(out, "Conflict with:") || !strings.Contains(out, first.id) {
		t.Errorf("machines show of the second machine:\n%s\nwant a conflict with %s", out, first.id)
	}
	if out := ok("machines", "show", first.id); !regexp.MustCompile(`(?m)^Conflict with:\s+-$`).MatchString(out) {
		t.Errorf("machines show of the first machine:\n%s\nwant no conflict", out)
	}
}
