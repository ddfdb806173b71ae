package agentapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// harness is a real daemon on loopback and Connect clients for the agent
// (no operator token) and the operator (the admin token).
type harness struct {
	d        *daemontest.Daemon
	agent    attestationv1connect.AgentServiceClient
	machines attestationv1connect.MachineServiceClient
	events   attestationv1connect.EventServiceClient
	configs  attestationv1connect.ConfigServiceClient
}

// start runs a daemon with EK policy "any" unless adjust says otherwise.
func start(t *testing.T, adjust func(*config.Config)) *harness {
	t.Helper()
	return startIn(t, "", adjust)
}

func startIn(t *testing.T, dataDir string, adjust func(*config.Config)) *harness {
	t.Helper()
	return startWith(t, daemontest.Options{DataDir: dataDir}, adjust)
}

// startWith is start with more of the daemon's options (subscriptions).
func startWith(t *testing.T, o daemontest.Options, adjust func(*config.Config)) *harness {
	t.Helper()
	o.Config = func(c *config.Config) {
		c.EKPolicy = config.EKPolicyAny
		if adjust != nil {
			adjust(c)
		}
	}
	d := daemontest.Start(t, o)
	admin := connect.WithInterceptors(bearer(daemontest.Token))
	return &harness{
		d:        d,
		agent:    attestationv1connect.NewAgentServiceClient(d.Client, d.URL),
		machines: attestationv1connect.NewMachineServiceClient(d.Client, d.URL, admin),
		events:   attestationv1connect.NewEventServiceClient(d.Client, d.URL, admin),
		configs:  attestationv1connect.NewConfigServiceClient(d.Client, d.URL, admin),
	}
}

// bearer sets an Authorization header on every call.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (h *harness) approve(t *testing.T, id, role, hostname string) *attestationv1.Machine {
	t.Helper()
	resp, err := h.machines.ApproveMachine(t.Context(), connect.NewRequest(&attestationv1.ApproveMachineRequest{Id: id, Role: role, Hostname: hostname}))
	if err != nil {
		t.Fatalf("approve %s: %v", id, err)
	}
	return resp.Msg.Machine
}

func (h *harness) machine(t *testing.T, id string) *attestationv1.Machine {
	t.Helper()
	resp, err := h.machines.GetMachine(t.Context(), connect.NewRequest(&attestationv1.GetMachineRequest{Id: id}))
	if err != nil {
		t.Fatalf("get machine %s: %v", id, err)
	}
	return resp.Msg.Machine
}

// eventList returns the machine's events in order.
func (h *harness) eventList(t *testing.T, id string) []*attestationv1.Event {
	t.Helper()
	resp, err := h.events.ListEvents(t.Context(), connect.NewRequest(&attestationv1.ListEventsRequest{Machine: id, PageSize: 1000}))
	if err != nil {
		t.Fatalf("list events of %s: %v", id, err)
	}
	return resp.Msg.Events
}

// eventTypes returns the types of the machine's events, space-separated.
func (h *harness) eventTypes(t *testing.T, id string) string {
	t.Helper()
	var ts []string
	for _, e := range h.eventList(t, id) {
		ts = append(ts, strings.TrimPrefix(e.Type, "node."))
	}
	return strings.Join(ts, " ")
}

// watch opens WatchApproval with a session token and returns what it
// streams, until the stream ends (the channel is then closed) and how.
func (h *harness) watch(t *testing.T, ctx context.Context, session string) (<-chan *attestationv1.WatchApprovalResponse, <-chan error) {
	t.Helper()
	req := connect.NewRequest(&attestationv1.WatchApprovalRequest{})
	req.Header().Set("Authorization", "Bearer "+session)
	stream, err := h.agent.WatchApproval(ctx, req)
	if err != nil {
		t.Fatalf("WatchApproval: %v", err)
	}
	msgs, done := make(chan *attestationv1.WatchApprovalResponse, 16), make(chan error, 1)
	go func() {
		defer close(msgs)
		defer stream.Close()
		for stream.Receive() {
			msgs <- stream.Msg()
		}
		done <- stream.Err()
	}()
	return msgs, done
}

// next returns the next watch message, failing after 10 s.
func next(t *testing.T, msgs <-chan *attestationv1.WatchApprovalResponse) *attestationv1.WatchApprovalResponse {
	t.Helper()
	select {
	case m, ok := <-msgs:
		if !ok {
			t.Fatal("the watch ended without a message")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no watch message within 10s")
	}
	return nil
}

// configURL watches until the machine is provisioned and returns the
// config URL the watch carries.
func (h *harness) configURL(t *testing.T, session string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	msgs, _ := h.watch(t, ctx, session)
	for m := range msgs {
		if m.State == "provisioned" {
			if m.ConfigUrl == "" {
				t.Fatal("provisioned without a config URL")
			}
			return m.ConfigUrl
		}
	}
	t.Fatal("the watch ended before the machine was provisioned")
	return ""
}

// fetch GETs a URL and returns the status and body.
func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func heartbeat(ctx context.Context, h *harness, session string, ips ...string) (*attestationv1.HeartbeatResponse, error) {
	req := connect.NewRequest(&attestationv1.HeartbeatRequest{Ips: ips})
	req.Header().Set("Authorization", "Bearer "+session)
	resp, err := h.agent.Heartbeat(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// wantCode fails unless err is a Connect error with code whose message
// contains every one of contains.
func wantCode(t *testing.T, err error, code connect.Code, contains ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got %s (%v), want %s", got, err, code)
	}
	var ce *connect.Error
	msg := err.Error()
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	for _, s := range contains {
		if !strings.Contains(msg, s) {
			t.Errorf("got message %q, want it to mention %q", msg, s)
		}
	}
}
