//go:build cgo

package agentapi_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/config"
)

// waitEvents polls until the machine's events are want, failing after
// timeout.
func (h *harness) waitEvents(t *testing.T, id, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := h.eventTypes(t, id)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events %q, want %q within %s", got, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHeartbeatMissed: three intervals without a heartbeat emit
// node.heartbeat_missed once; a heartbeat clears it, and the next silence
// is reported again.
func TestHeartbeatMissed(t *testing.T) {
	const interval = 200 * time.Millisecond
	h := start(t, func(c *config.Config) { c.HeartbeatInterval = config.Duration(interval) })
	a := boot(t, "simulator")
	ch, att := h.enroll(t, a, nil)

	// Heartbeats in time: nothing is missed.
	for range 6 {
		resp, err := heartbeat(t.Context(), h, att.SessionToken)
		if err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
		if d := time.Until(resp.NextDeadline.AsTime()); d <= 0 || d > interval {
			t.Errorf("next deadline in %s, want within the interval %s", d, interval)
		}
		time.Sleep(interval)
	}
	if got := h.eventTypes(t, ch.MachineId); got != "registered online" {
		t.Fatalf("events while heartbeating %q, want no missed heartbeat", got)
	}

	h.waitEvents(t, ch.MachineId, "registered online heartbeat_missed", 10*interval)
	time.Sleep(6 * interval)
	if got := h.eventTypes(t, ch.MachineId); got != "registered online heartbeat_missed" {
		t.Fatalf("events after a longer silence %q, want one heartbeat_missed", got)
	}
	ev := h.eventList(t, ch.MachineId)[2].Payload.AsMap()
	if ev["last_heartbeat"] == nil || ev["deadline"] == nil {
		t.Errorf("node.heartbeat_missed payload %v: want last_heartbeat and deadline", ev)
	}
	if m := h.machine(t, ch.MachineId); m.LastHeartbeatAt == nil {
		t.Error("last heartbeat not recorded")
	}

	if _, err := heartbeat(t.Context(), h, att.SessionToken); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	h.waitEvents(t, ch.MachineId, "registered online heartbeat_missed heartbeat_missed", 10*interval)
}

// TestSessionRenewedByHeartbeat: a session outlives its TTL while the agent
// heartbeats, and expires when it stops.
func TestSessionRenewedByHeartbeat(t *testing.T) {
	const ttl = 600 * time.Millisecond
	h := start(t, func(c *config.Config) { c.SessionTTL = config.Duration(ttl) })
	a := boot(t, "simulator")
	_, att := h.enroll(t, a, nil)
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(ttl / 4) {
		if _, err := heartbeat(t.Context(), h, att.SessionToken); err != nil {
			t.Fatalf("Heartbeat within the renewed session: %v", err)
		}
	}
	time.Sleep(ttl + 100*time.Millisecond)
	_, err := heartbeat(t.Context(), h, att.SessionToken)
	wantCode(t, err, connect.CodeUnauthenticated, "expired")
	msgs, done := h.watch(t, t.Context(), att.SessionToken)
	for range msgs {
		t.Error("the watch sent a message on an expired session")
	}
	wantCode(t, <-done, connect.CodeUnauthenticated, "expired")
}

// TestHeartbeatBadIP: a heartbeat with something that is not an IP is
// refused and changes nothing.
func TestHeartbeatBadIP(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	ch, att := h.enroll(t, a, nil)
	_, err := heartbeat(t.Context(), h, att.SessionToken, "10.0.0.300")
	wantCode(t, err, connect.CodeInvalidArgument, "10.0.0.300")
	if m := h.machine(t, ch.MachineId); m.LastHeartbeatAt != nil || m.Ip != "127.0.0.1" {
		t.Errorf("after a refused heartbeat: last heartbeat %v, IP %s; want unchanged", m.LastHeartbeatAt, m.Ip)
	}
}

// TestForwardedForIgnored: the IP recorded is the TCP peer's, whatever
// X-Forwarded-For says.
func TestForwardedForIgnored(t *testing.T) {
	h := start(t, nil)
	a := boot(t, "simulator")
	req := connect.NewRequest(registration(a, nil))
	req.Header().Set("X-Forwarded-For", "203.0.113.9")
	req.Header().Set("X-Real-IP", "203.0.113.9")
	resp, err := h.agent.Register(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if m := h.machine(t, resp.Msg.MachineId); m.Ip != "127.0.0.1" {
		t.Errorf("IP %s, want the peer's 127.0.0.1", m.Ip)
	}
}
