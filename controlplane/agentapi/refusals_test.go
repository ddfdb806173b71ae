//go:build cgo

package agentapi_test

// Every way an attestation can be refused, each on its own: the refusal
// comes with a clear error, the machine does not come online, and nothing
// the agent holds afterwards lets it in.

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-tpm/tpm2"
	"google.golang.org/protobuf/proto"

	"github.com/attestation/attestation/controlplane/agentapi"
	"github.com/attestation/attestation/controlplane/config"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// notOnline fails when the machine came online.
func (h *harness) notOnline(t *testing.T, id string) {
	t.Helper()
	if m := h.machine(t, id); m.State != "registered" || m.AttestedAt != nil {
		t.Errorf("machine %s is %s (attested at %v), want registered and never attested", id, m.State, m.AttestedAt)
	}
	if got := h.eventTypes(t, id); got != "registered" {
		t.Errorf("events %q, want only registered", got)
	}
}

// softAK is a well-formed AK public area for a key that lives outside the
// TPM.
func softAK(t *testing.T) []byte {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return agentapi.ECCAKPublic(k.PublicKey().Bytes())
}

// TestRefuseCredentialForAnotherAK: the agent presents an AK that is not
// in its TPM (one it could sign quotes with in software). The credential is
// bound to that AK's name, so the TPM will not release the secret, and no
// guess gets through.
func TestRefuseCredentialForAnotherAK(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	req := registration(a, nil)
	req.AkPublic = softAK(t)
	ch := h.register(t, req)
	if _, err := a.ActivateCredential(ch.CredentialBlob, ch.EncryptedSecret); err == nil {
		t.Fatal("the TPM activated a credential bound to another AK's name")
	}
	guess := quote(t, a, ch, &attestationv1.AttestRequest{ChallengeId: ch.ChallengeId, Secret: bytes.Repeat([]byte{7}, 32)})
	_, err := h.attest(t, guess)
	wantCode(t, err, connect.CodePermissionDenied, "wrong secret")
	h.notOnline(t, ch.MachineId)
}

// TestRefuseWrongSecret: a wrong secret is refused, and it burns the
// challenge: the right answer afterwards is too late.
func TestRefuseWrongSecret(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch := h.register(t, registration(a, nil))
	good := quote(t, a, ch, answer(t, a, ch))
	bad := &attestationv1.AttestRequest{ChallengeId: good.ChallengeId, Secret: bytes.Clone(good.Secret), Quote: good.Quote, QuoteSignature: good.QuoteSignature, PcrValues: good.PcrValues}
	bad.Secret[0] ^= 1
	_, err := h.attest(t, bad)
	wantCode(t, err, connect.CodePermissionDenied, "wrong secret")
	_, err = h.attest(t, good)
	wantCode(t, err, connect.CodeFailedPrecondition, "used already")
	h.notOnline(t, ch.MachineId)
}

// TestRefuseReplay: a successful answer sent again is refused, and of
// identical answers sent at once exactly one gets a session.
func TestRefuseReplay(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch := h.register(t, registration(a, nil))
	req := quote(t, a, ch, answer(t, a, ch))
	if _, err := h.attest(t, req); err != nil {
		t.Fatalf("Attest: %v", err)
	}
	_, err := h.attest(t, req)
	wantCode(t, err, connect.CodeFailedPrecondition, "used already")

	ch = h.register(t, registration(a, nil))
	req = quote(t, a, ch, answer(t, a, ch))
	answerAtOnce(t, req, h.agent)
	if got, want := h.eventTypes(t, ch.MachineId), "registered online online"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

// answerAtOnce sends req ten times at once, to the clients in turn, and
// fails unless exactly one gets a session and the others are refused as
// replays.
func answerAtOnce(t *testing.T, req *attestationv1.AttestRequest, clients ...attestationv1connect.AgentServiceClient) {
	t.Helper()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		sessions int
		refused  []error
	)
	for i := range 10 {
		c := clients[i%len(clients)]
		wg.Go(func() {
			_, err := c.Attest(t.Context(), connect.NewRequest(req))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				sessions++
			} else {
				refused = append(refused, err)
			}
		})
	}
	wg.Wait()
	if sessions != 1 {
		t.Errorf("%d of 10 identical answers got a session, want exactly 1", sessions)
	}
	for _, err := range refused {
		if connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("a concurrent replay got %v, want failed_precondition", err)
		}
	}
}

// TestRefuseExpiredChallenge: an answer after the challenge's expiry is
// refused.
func TestRefuseExpiredChallenge(t *testing.T) {
	h := start(t, func(c *config.Config) { c.ChallengeTTL = config.Duration(300 * time.Millisecond) })
	a := boot(t, "simulator")
	ch := h.register(t, registration(a, nil))
	req := quote(t, a, ch, answer(t, a, ch))
	time.Sleep(time.Until(ch.ExpiresAt.AsTime()) + 50*time.Millisecond)
	_, err := h.attest(t, req)
	wantCode(t, err, connect.CodeFailedPrecondition, "expired")
	h.notOnline(t, ch.MachineId)
}

// TestRefuseOtherNonce: a quote over an earlier challenge's nonce does not
// answer a later challenge, even with that challenge's secret.
func TestRefuseOtherNonce(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	first := h.register(t, registration(a, nil))
	old := quote(t, a, first, answer(t, a, first))
	second := h.register(t, registration(a, nil))
	req := answer(t, a, second)
	req.Quote, req.QuoteSignature, req.PcrValues = old.Quote, old.QuoteSignature, old.PcrValues
	_, err := h.attest(t, req)
	wantCode(t, err, connect.CodePermissionDenied, "not over this challenge's nonce")
	h.notOnline(t, second.MachineId)
}

// TestRefuseTamperedQuote: one flipped bit in the quote breaks the AK's
// signature.
func TestRefuseTamperedQuote(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch := h.register(t, registration(a, nil))
	req := quote(t, a, ch, answer(t, a, ch))
	req.Quote = bytes.Clone(req.Quote)
	req.Quote[len(req.Quote)-1] ^= 1 // in the PCR digest
	_, err := h.attest(t, req)
	wantCode(t, err, connect.CodePermissionDenied, "signature")
	h.notOnline(t, ch.MachineId)
}

// TestRefuseTamperedPCR: a reported PCR value that is not the quoted one
// is refused.
func TestRefuseTamperedPCR(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch := h.register(t, registration(a, nil))
	req := quote(t, a, ch, answer(t, a, ch))
	req.PcrValues[4] = bytes.Repeat([]byte{0x44}, 32)
	_, err := h.attest(t, req)
	wantCode(t, err, connect.CodePermissionDenied, "do not match the quoted digest")
	h.notOnline(t, ch.MachineId)
}

// TestRefuseMissingPCRs: a quote over fewer PCRs than asked for is refused.
func TestRefuseMissingPCRs(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch := h.register(t, registration(a, nil))
	req := answer(t, a, ch)
	short := proto.Clone(ch).(*attestationv1.RegisterResponse)
	short.Pcrs = ch.Pcrs[:4]
	quote(t, a, short, req)
	_, err := h.attest(t, req)
	wantCode(t, err, connect.CodePermissionDenied, "does not cover the requested PCRs [4 5 6 7]")
	h.notOnline(t, ch.MachineId)
}

// TestRefusePCRPolicy: a machine whose role expects other PCR values is
// refused, naming the differing PCRs; one whose values match attests.
func TestRefusePCRPolicy(t *testing.T) {
	zero := strings.Repeat("00", 32)
	h := start(t, func(c *config.Config) {
		c.PCRPolicy = map[string]map[int]string{
			"worker":  {0: zero, 7: strings.Repeat("ab", 32), 16: strings.Repeat("cd", 32)},
			"storage": {0: zero, 7: zero},
		}
	})
	for _, c := range []struct{ seed, role, hostname string }{{"simulator:11", "worker", "w1"}, {"simulator:12", "storage", "s1"}} {
		a := boot(t, c.seed)
		_, err := h.machines.RegisterMachine(t.Context(), connect.NewRequest(&attestationv1.RegisterMachineRequest{
			EkFingerprint: a.EK().Fingerprint, Role: c.role, Hostname: c.hostname,
		}))
		if err != nil {
			t.Fatal(err)
		}
		ch := h.register(t, registration(a, nil))
		if len(ch.Pcrs) != 9 || ch.Pcrs[8] != 16 {
			t.Fatalf("quote PCRs %v, want 0..7 and 16 (named by a policy)", ch.Pcrs)
		}
		_, err = h.attest(t, quote(t, a, ch, answer(t, a, ch)))
		if c.role == "worker" {
			wantCode(t, err, connect.CodePermissionDenied, "role worker", "PCR 7, 16")
			h.notOnline(t, ch.MachineId)
		} else if err != nil {
			t.Fatalf("Attest of role %s with matching PCRs: %v", c.role, err)
		}
		a.Close()
	}
}

// TestRefuseAKAttributes: an AK the TPM could use for anything but
// signing what it generated is refused at Register.
func TestRefuseAKAttributes(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	for _, c := range []struct {
		name   string
		change func(*tpm2.TPMAObject)
		want   string
	}{
		{"not fixedTPM", func(o *tpm2.TPMAObject) { o.FixedTPM = false }, "fixedTPM"},
		{"not restricted", func(o *tpm2.TPMAObject) { o.Restricted = false }, "restricted"},
		{"not sensitiveDataOrigin", func(o *tpm2.TPMAObject) { o.SensitiveDataOrigin = false }, "sensitiveDataOrigin"},
		{"decrypt", func(o *tpm2.TPMAObject) { o.Decrypt = true }, "decrypt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](a.AK().Public)
			if err != nil {
				t.Fatal(err)
			}
			c.change(&pub.ObjectAttributes)
			req := registration(a, nil)
			req.AkPublic = tpm2.Marshal(*pub)
			_, err = h.agent.Register(t.Context(), connect.NewRequest(req))
			wantCode(t, err, connect.CodeInvalidArgument, "ak_public", c.want)
		})
	}
	resp, err := h.machines.ListMachines(t.Context(), connect.NewRequest(&attestationv1.ListMachinesRequest{}))
	if err != nil || len(resp.Msg.Machines) != 0 {
		t.Errorf("machines after refused registrations: %v, %v; want none", resp.Msg.GetMachines(), err)
	}
}

// TestRefuseDecommissionedEK: a revoked machine's EK cannot enroll again,
// and its session ends, until an operator reinstates it.
func TestRefuseDecommissionedEK(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch, att := h.enroll(t, a, nil)
	msgs, done := h.watch(t, t.Context(), att.SessionToken)
	if m := next(t, msgs); m.State != "attested" {
		t.Fatalf("watch: %v, want attested", m)
	}
	if _, err := h.machines.RevokeMachine(t.Context(), connect.NewRequest(&attestationv1.RevokeMachineRequest{Id: ch.MachineId, Reason: "stolen"})); err != nil {
		t.Fatal(err)
	}
	if m := next(t, msgs); m.State != "decommissioned" {
		t.Errorf("the open watch got %v, want decommissioned", m)
	}
	if err := <-done; err != nil {
		t.Errorf("the watch ended with %v, want nil after saying decommissioned", err)
	}
	_, err := h.agent.Register(t.Context(), connect.NewRequest(registration(a, nil)))
	wantCode(t, err, connect.CodeFailedPrecondition, "decommissioned", "stolen", "reinstate")
	_, err = heartbeat(t.Context(), h, att.SessionToken)
	wantCode(t, err, connect.CodeUnauthenticated)

	if _, err := h.machines.ReinstateMachine(t.Context(), connect.NewRequest(&attestationv1.ReinstateMachineRequest{Id: ch.MachineId})); err != nil {
		t.Fatal(err)
	}
	ch2, att2 := h.enroll(t, a, nil)
	if ch2.MachineId != ch.MachineId || att2.State != "attested" {
		t.Errorf("after reinstatement: %s in %s, want %s attested", ch2.MachineId, att2.State, ch.MachineId)
	}
}

// TestVerifyPolicy: with the verify policy, an EK certificate from the
// configured CA enrolls; one from an unknown CA, or none, is refused.
func TestVerifyPolicy(t *testing.T) {
	known, unknown := newCA(t, "Known TPM Maker"), newCA(t, "Unknown TPM Maker")
	h := start(t, func(c *config.Config) {
		c.EKPolicy, c.EKRoots = config.EKPolicyVerify, rootsDir(t, known)
	})
	a := boot(t, "simulator")
	for _, c := range []struct {
		name string
		cert []byte
		want string
	}{
		{"unknown CA", unknown.issueEK(t, a.EK().Key), "certificate signed by unknown authority"},
		{"no certificate", nil, "none presented"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := registration(a, nil)
			req.EkCertificate = c.cert
			_, err := h.agent.Register(t.Context(), connect.NewRequest(req))
			wantCode(t, err, connect.CodePermissionDenied, "EK refused by policy verify", c.want)
		})
	}
	resp, err := h.machines.ListMachines(t.Context(), connect.NewRequest(&attestationv1.ListMachinesRequest{}))
	if err != nil || len(resp.Msg.Machines) != 0 {
		t.Errorf("machines after refused registrations: %v, %v; want none", resp.Msg.GetMachines(), err)
	}

	req := registration(a, nil)
	req.EkCertificate = known.issueEK(t, a.EK().Key)
	ch := h.register(t, req)
	if _, err := h.attest(t, quote(t, a, ch, answer(t, a, ch))); err != nil {
		t.Fatalf("Attest with a verified EK certificate: %v", err)
	}
}

// TestAllowlistPolicy: with the allowlist policy, an EK neither listed nor
// pre-registered is refused; a listed one enrolls.
func TestAllowlistPolicy(t *testing.T) {
	listed := strings.Repeat("ab", 32)
	a := boot(t, "simulator")
	h := start(t, func(c *config.Config) { c.EKPolicy, c.EKAllowlist = config.EKPolicyAllowlist, []string{listed} })
	_, err := h.agent.Register(t.Context(), connect.NewRequest(registration(a, nil)))
	wantCode(t, err, connect.CodePermissionDenied, "neither on the allowlist", a.EK().Fingerprint)

	h = start(t, func(c *config.Config) {
		c.EKPolicy, c.EKAllowlist = config.EKPolicyAllowlist, []string{strings.ToUpper(a.EK().Fingerprint)}
	})
	h.enroll(t, a, nil)
}

// TestVerifyPolicyWithoutRoots: verify without a roots bundle refuses
// every EK, and says what to configure.
func TestVerifyPolicyWithoutRoots(t *testing.T) {
	h := start(t, func(c *config.Config) { c.EKPolicy = config.EKPolicyVerify })
	a := boot(t, "simulator")
	_, err := h.agent.Register(t.Context(), connect.NewRequest(registration(a, nil)))
	wantCode(t, err, connect.CodePermissionDenied, "--ek-roots")
}

// TestRefuseMalformed: requests that are not what an agent sends.
func TestRefuseMalformed(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	for _, c := range []struct {
		name   string
		change func(*attestationv1.RegisterRequest)
		want   string
	}{
		{"no EK", func(r *attestationv1.RegisterRequest) { r.EkPublic = nil }, "ek_public"},
		{"EK truncated", func(r *attestationv1.RegisterRequest) { r.EkPublic = r.EkPublic[:40] }, "ek_public"},
		{"AK as EK", func(r *attestationv1.RegisterRequest) { r.EkPublic = r.AkPublic }, "ek_public"},
		{"no AK", func(r *attestationv1.RegisterRequest) { r.AkPublic = nil }, "ak_public"},
		{"EK as AK", func(r *attestationv1.RegisterRequest) { r.AkPublic = r.EkPublic }, "ak_public"},
		{"bad MAC", func(r *attestationv1.RegisterRequest) { r.Hardware.Macs = []string{"not-a-mac"} }, "not-a-mac"},
		{"no TPM but an EK", func(r *attestationv1.RegisterRequest) { r.TpmAvailable = false }, "tpm_available"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := registration(a, nil)
			c.change(req)
			_, err := h.agent.Register(t.Context(), connect.NewRequest(req))
			wantCode(t, err, connect.CodeInvalidArgument, c.want)
		})
	}
	_, err := h.attest(t, &attestationv1.AttestRequest{ChallengeId: hex.EncodeToString(make([]byte, 16))})
	wantCode(t, err, connect.CodeNotFound, "unknown challenge")
	ch := h.register(t, registration(a, nil))
	req := answer(t, a, ch)
	req.Quote = []byte{1, 2, 3}
	_, err = h.attest(t, req)
	wantCode(t, err, connect.CodePermissionDenied, "quote: malformed TPM structure")
}

// TestRegisterAloneRecordsNothing: the EK public is no secret, so a
// Register for a known EK without the attestation that follows changes
// nothing the machine's record says; the attestation records it.
func TestRegisterAloneRecordsNothing(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch, _ := h.enroll(t, a, nil)
	before := h.machine(t, ch.MachineId)

	forged := registration(a, &attestationv1.Hardware{SmbiosUuid: "00000000-0000-0000-0000-000000000bad", Macs: []string{"02:00:00:00:0b:ad"}, Serial: "FORGED"})
	h.register(t, forged)
	if after := h.machine(t, ch.MachineId); !proto.Equal(after, before) {
		t.Errorf("an unanswered Register changed the machine:\nbefore %v\nafter  %v", before, after)
	}

	// Answered, the same report is recorded.
	ch2 := h.register(t, forged)
	if _, err := h.attest(t, quote(t, a, ch2, answer(t, a, ch2))); err != nil {
		t.Fatal(err)
	}
	if m := h.machine(t, ch.MachineId); m.Serial != "FORGED" || !slices.Contains(m.Macs, "02:00:00:00:0b:ad") {
		t.Errorf("after attesting: serial %q, MACs %v; want the reported ones", m.Serial, m.Macs)
	}
}

// TestChallengeOutlivesRestart: a challenge is not held in memory but
// sealed under a key derived from the data directory's config token key:
// an answer to one issued before a restart is taken, once; a daemon with
// another data directory, another key, refuses it.
func TestChallengeOutlivesRestart(t *testing.T) {
	dir := t.TempDir()
	h := startIn(t, dir, nil)
	a := boot(t, "simulator")
	ch := h.register(t, registration(a, nil))
	req := quote(t, a, ch, answer(t, a, ch))
	h.d.Stop(t)

	other := start(t, nil)
	_, err := other.attest(t, req)
	wantForeign(t, err)

	h = startIn(t, dir, nil)
	att, err := h.attest(t, req)
	if err != nil {
		t.Fatalf("Attest after the restart: %v", err)
	}
	if att.MachineId != ch.MachineId || att.State != "attested" {
		t.Errorf("after the restart: %s in %s, want %s attested", att.MachineId, att.State, ch.MachineId)
	}
	_, err = h.attest(t, req)
	wantCode(t, err, connect.CodeFailedPrecondition, "used already")
}
