//go:build cgo

package agentapi_test

import (
	"context"
	"net/http"
	"path"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/events"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

const workerTemplate = "hostname: {{.Hostname}}\nrole: {{.Role}}\nek: {{.EKFingerprint}}\nmacs: {{join .MACs \",\"}}\n"

// TestFullLoop is the whole enrollment through the real API: the agent
// registers and attests with its TPM, waits for approval on the watch
// stream, an operator approves, the agent fetches its config once.
func TestFullLoop(t *testing.T) {
	// Two subscribers of node.provisioned: only the one that asks gets
	// the config URL.
	urls := make(chan [2]string, 2)
	subscriber := func(name string, configURLs bool) events.Subscription {
		return events.Subscription{Name: name, Types: []events.Type{events.TypeProvisioned}, ConfigURLs: configURLs,
			Handle: func(ctx context.Context, env events.Envelope) error {
				ev, err := env.Decode()
				if err != nil {
					return err
				}
				urls <- [2]string{name, ev.(*events.Provisioned).ConfigURL}
				return nil
			}}
	}
	h := startWith(t, daemontest.Options{Subscriptions: []events.Subscription{
		subscriber("provisioner", true), subscriber("audit", false),
	}}, nil)
	if _, err := h.configs.SetConfig(t.Context(), connect.NewRequest(&attestationv1.SetConfigRequest{Role: "worker", Template: workerTemplate})); err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	a := boot(t, "simulator")

	ch := h.register(t, registration(a, nil))
	if len(ch.CredentialBlob) == 0 || len(ch.EncryptedSecret) == 0 || len(ch.Nonce) != 32 || ch.ChallengeId == "" {
		t.Fatalf("challenge %v: want a credential, a 32-byte nonce and an ID", ch)
	}
	if got := ch.Pcrs; len(got) != 8 || got[0] != 0 || got[7] != 7 {
		t.Errorf("quote PCRs %v, want 0..7", got)
	}
	if d := time.Until(ch.ExpiresAt.AsTime()); d <= 50*time.Second || d > 61*time.Second {
		t.Errorf("challenge expires in %s, want about 60s", d)
	}
	if m := h.machine(t, ch.MachineId); m.State != "registered" || m.EkFingerprint != a.EK().Fingerprint || !m.TpmAvailable || m.Ip != "127.0.0.1" {
		t.Errorf("after Register: machine %v; want registered, the EK's fingerprint, a TPM, the peer's IP", m)
	}

	att, err := h.attest(t, quote(t, a, ch, answer(t, a, ch)))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if att.MachineId != ch.MachineId || att.State != "attested" || len(att.SessionToken) < 40 || att.ConfigUrl != "" {
		t.Fatalf("AttestResponse %v: want the machine attested with a session token and no config URL", att)
	}
	if d := time.Until(att.SessionExpiresAt.AsTime()); d < 14*time.Minute || d > 15*time.Minute {
		t.Errorf("session expires in %s, want about 15m", d)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	msgs, done := h.watch(t, ctx, att.SessionToken)
	if m := next(t, msgs); m.State != "attested" || m.ConfigUrl != "" {
		t.Fatalf("first watch message %v, want attested without a config URL", m)
	}
	h.approve(t, ch.MachineId, "worker", "node-1")
	m := next(t, msgs)
	if m.State != "provisioned" || m.Hostname != "node-1" || m.Role != "worker" || !strings.HasPrefix(m.ConfigUrl, h.d.URL+"/config/") {
		t.Fatalf("watch message after approval %v: want provisioned, node-1, worker and a config URL under %s/config/", m, h.d.URL)
	}
	if err := <-done; err != nil {
		t.Errorf("the watch ended with %v, want nil once the URL is sent", err)
	}

	status, body := fetch(t, m.ConfigUrl)
	want := "hostname: node-1\nrole: worker\nek: " + a.EK().Fingerprint + "\nmacs: 52:54:00:12:34:56\n"
	if status != http.StatusOK || body != want {
		t.Fatalf("GET config: %d %q, want 200 %q", status, body, want)
	}
	if status, body := fetch(t, m.ConfigUrl); status != http.StatusGone {
		t.Errorf("second GET config: %d %q, want 410", status, body)
	}

	if got, want := h.eventTypes(t, ch.MachineId), "registered online provisioned configured"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	evs := h.eventList(t, ch.MachineId)
	reg := evs[0].Payload.AsMap()
	if reg["ip"] != "127.0.0.1" || reg["mac"] != "52:54:00:12:34:56" || reg["tpm_available"] != true ||
		reg["hardware"].(map[string]any)["smbios_uuid"] != "4c4c4544-0000-1111-2222-333344445555" {
		t.Errorf("node.registered payload %v: want the peer IP, MAC, TPM and hardware", reg)
	}
	// node.provisioned as stored and listed carries a reference to the
	// config token, never its URL (a bearer secret).
	prov := evs[2].Payload.AsMap()
	if u, ok := prov["config_url"]; ok {
		t.Errorf("node.provisioned as listed has config_url %q, want none", u)
	}
	if id, _ := prov["config_token_id"].(string); len(id) != 32 || strings.Contains(m.ConfigUrl, id) {
		t.Errorf("node.provisioned config_token_id %q, want 32 hex digits, not part of the URL", id)
	}
	// The subscriber that asked got the URL the watch handed out; the
	// other did not.
	for range 2 {
		select {
		case got := <-urls:
			want := ""
			if got[0] == "provisioner" {
				want = m.ConfigUrl
			}
			if got[1] != want {
				t.Errorf("subscriber %s got config URL %q, want %q", got[0], got[1], want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("node.provisioned did not reach both subscribers")
		}
	}

	got := h.machine(t, ch.MachineId)
	if got.State != "provisioned" || got.AttestedAt == nil || got.ConfiguredAt == nil {
		t.Errorf("machine %v: want provisioned, attested and configured", got)
	}

	// Once configured, a watch says provisioned and hands out nothing more.
	msgs, _ = h.watch(t, ctx, att.SessionToken)
	if m := next(t, msgs); m.State != "provisioned" || m.ConfigUrl != "" {
		t.Errorf("watch after the config was fetched: %v, want provisioned and no URL", m)
	}
	if _, err := heartbeat(ctx, h, att.SessionToken, "192.0.2.44"); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if got := h.machine(t, ch.MachineId); got.LastHeartbeatAt == nil || got.Ip != "192.0.2.44" {
		t.Errorf("after a heartbeat: last heartbeat %v, IP %s; want set and 192.0.2.44", got.LastHeartbeatAt, got.Ip)
	}
}

// TestSameEKReattests boots the same machine twice: the same EK is the same
// machine, which attests again and stays provisioned.
func TestSameEKReattests(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator:7")
	ch1, att1 := h.enroll(t, a, nil)
	h.approve(t, ch1.MachineId, "worker", "node-7")
	a.Close()

	a = boot(t, "simulator:7")
	ch2, att2 := h.enroll(t, a, &attestationv1.Hardware{Macs: []string{"52:54:00:00:00:07"}})
	if ch2.MachineId != ch1.MachineId || att2.State != "provisioned" {
		t.Errorf("second boot: machine %s in %s, want %s still provisioned", ch2.MachineId, att2.State, ch1.MachineId)
	}
	if att2.SessionToken == att1.SessionToken {
		t.Error("the second attestation reused the session token")
	}
	// The first boot's session ended with the second attestation.
	_, err := heartbeat(t.Context(), h, att1.SessionToken)
	wantCode(t, err, connect.CodeUnauthenticated)
	if got, want := h.eventTypes(t, ch1.MachineId), "registered online provisioned online"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	if m := h.machine(t, ch1.MachineId); strings.Join(m.Macs, ",") != "52:54:00:12:34:56,52:54:00:00:00:07" {
		t.Errorf("MACs %v, want both boots' MACs", m.Macs)
	}
}

// TestPreRegisteredApprovedOnAttest: an operator pre-registers the EK with
// a role and hostname; its first attestation approves it, and Attest
// answers with the config URL WatchApproval hands out.
func TestPreRegisteredApprovedOnAttest(t *testing.T) {
	h := start(t, func(c *config.Config) { c.EKPolicy = config.EKPolicyAllowlist })
	a := boot(t, "simulator")
	pre, err := h.machines.RegisterMachine(t.Context(), connect.NewRequest(&attestationv1.RegisterMachineRequest{
		EkFingerprint: a.EK().Fingerprint, Role: "worker", Hostname: "node-9",
	}))
	if err != nil {
		t.Fatal(err)
	}
	ch, att := h.enroll(t, a, nil)
	if ch.MachineId != pre.Msg.Machine.Id || att.State != "provisioned" {
		t.Fatalf("attested pre-registered machine: %s in %s, want %s provisioned", ch.MachineId, att.State, pre.Msg.Machine.Id)
	}
	if got, want := h.eventTypes(t, ch.MachineId), "registered online provisioned"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	url := h.configURL(t, att.SessionToken)
	if att.ConfigUrl != url {
		t.Errorf("Attest answered with config URL %q, want WatchApproval's %q", att.ConfigUrl, url)
	}
	if status, body := fetch(t, url); status != http.StatusOK || !strings.Contains(body, "hostname: node-9") {
		t.Errorf("GET config: %d %q, want 200 and the default config naming node-9", status, body)
	}
}

// TestSMBIOSConflict: another EK with the same SMBIOS UUID is another
// machine, flagged as conflicting with the first.
func TestSMBIOSConflict(t *testing.T) {
	h := start(t, nil)
	hw := &attestationv1.Hardware{SmbiosUuid: "4C4C4544-AAAA-BBBB-CCCC-DDDDEEEEFFFF"}
	a := boot(t, "simulator:1")
	first := h.register(t, registration(a, hw))
	a.Close()
	a = boot(t, "simulator:2")
	second := h.register(t, registration(a, hw))
	if second.MachineId == first.MachineId {
		t.Fatal("another EK became the same machine")
	}
	if m := h.machine(t, second.MachineId); m.ConflictWith != first.MachineId || m.SmbiosUuid != "4c4c4544-aaaa-bbbb-cccc-ddddeeeeffff" {
		t.Errorf("second machine: conflict_with %q, SMBIOS UUID %q; want %q and the UUID in lower case", m.ConflictWith, m.SmbiosUuid, first.MachineId)
	}
	if m := h.machine(t, first.MachineId); m.ConflictWith != "" {
		t.Errorf("first machine: conflict_with %q, want none", m.ConflictWith)
	}
	if p := h.eventList(t, second.MachineId)[0].Payload.AsMap(); p["conflict_with"] != first.MachineId {
		t.Errorf("node.registered of the second machine: %v, want conflict_with %s", p, first.MachineId)
	}
}

// TestWatchSurvivesRestart: the daemon restarts while the agent waits; the
// agent reconnects with its session and gets its config URL.
func TestWatchSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	h := startIn(t, dir, nil)
	a := boot(t, "simulator")
	ch, att := h.enroll(t, a, nil)
	msgs, done := h.watch(t, t.Context(), att.SessionToken)
	if m := next(t, msgs); m.State != "attested" {
		t.Fatalf("watch: %v, want attested", m)
	}
	h.d.Stop(t)
	select {
	case err := <-done:
		if err != nil && connect.CodeOf(err) != connect.CodeUnavailable {
			t.Logf("the watch ended with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the watch did not end when the daemon stopped")
	}

	h = startIn(t, dir, nil)
	msgs, _ = h.watch(t, t.Context(), att.SessionToken)
	if m := next(t, msgs); m.State != "attested" {
		t.Fatalf("watch after the restart: %v, want attested", m)
	}
	h.approve(t, ch.MachineId, "worker", "node-2")
	m := next(t, msgs)
	if m.State != "provisioned" || m.ConfigUrl == "" {
		t.Fatalf("watch after approval: %v, want provisioned with a URL", m)
	}
	// The agent may lose the stream before it fetches: reconnecting, even
	// to a restarted daemon, hands out the same token (watching changes
	// nothing). The restarted test daemon listens on another port.
	h.d.Stop(t)
	h = startIn(t, dir, nil)
	again := h.configURL(t, att.SessionToken)
	if path.Base(again) != path.Base(m.ConfigUrl) {
		t.Errorf("the reconnected watch handed out %s, want the same token as %s", again, m.ConfigUrl)
	}
	if status, _ := fetch(t, again); status != http.StatusOK {
		t.Errorf("GET the URL: %d, want 200", status)
	}
}

// TestWatchRenewsExpiredURL: an agent that reconnects after its config URL
// expired gets a new one, and the old one stays gone.
func TestWatchRenewsExpiredURL(t *testing.T) {
	h := start(t, func(c *config.Config) { c.ConfigTokenTTL = config.Duration(300 * time.Millisecond) })
	a := boot(t, "simulator")
	ch, att := h.enroll(t, a, nil)
	h.approve(t, ch.MachineId, "worker", "node-3")
	first := h.configURL(t, att.SessionToken)
	if again := h.configURL(t, att.SessionToken); again != first {
		t.Fatalf("a second watch before the expiry handed out %s, want the same %s", again, first)
	}
	time.Sleep(400 * time.Millisecond)
	renewed := h.configURL(t, att.SessionToken)
	if renewed == first {
		t.Fatal("the watch handed out the expired URL again")
	}
	if status, _ := fetch(t, first); status != http.StatusGone {
		t.Errorf("GET the expired URL: %d, want 410", status)
	}
	if status, _ := fetch(t, renewed); status != http.StatusOK {
		t.Errorf("GET the renewed URL: %d, want 200", status)
	}
}
