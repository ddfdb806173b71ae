package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// Short names for the procedures under test.
const (
	procList      = attestationv1connect.MachineServiceListMachinesProcedure
	procGet       = attestationv1connect.MachineServiceGetMachineProcedure
	procRegister  = attestationv1connect.MachineServiceRegisterMachineProcedure
	procApprove   = attestationv1connect.MachineServiceApproveMachineProcedure
	procRevoke    = attestationv1connect.MachineServiceRevokeMachineProcedure
	procSetRole   = attestationv1connect.MachineServiceSetMachineRoleProcedure
	procReinstate = attestationv1connect.MachineServiceReinstateMachineProcedure
	procEvents    = attestationv1connect.EventServiceListEventsProcedure
	procWatch     = attestationv1connect.EventServiceWatchEventsProcedure
	procExts      = attestationv1connect.ExtensionServiceListExtensionsProcedure
)

// transport calls a unary operator procedure over one protocol. Errors
// are *connect.Error whatever the protocol, so tests compare codes.
type transport interface {
	Name() string
	Call(ctx context.Context, procedure string, req proto.Message) (proto.Message, error)
}

// transportNames are the protocols every operator RPC is tested over.
var transportNames = []string{"connect", "grpc", "grpcweb", "rest"}

// newTransport returns the named transport to d sending authorization as
// the Authorization header ("" sends none).
func newTransport(t *testing.T, name string, d *daemontest.Daemon, authorization string) transport {
	t.Helper()
	switch name {
	case "connect":
		return newConnectTransport(d.URL, authorization)
	case "grpcweb":
		c := newConnectTransport(d.URL, authorization, connect.WithGRPCWeb())
		c.name = "grpcweb"
		return c
	case "grpc":
		return &grpcTransport{conn: dialGRPC(t, d), authorization: authorization}
	case "rest":
		return &restTransport{base: d.URL, authorization: authorization}
	}
	t.Fatalf("unknown transport %q", name)
	return nil
}

func bearer(token string) string { return "Bearer " + token }

func newResponse(procedure string) proto.Message {
	switch procedure {
	case procList:
		return &attestationv1.ListMachinesResponse{}
	case procGet:
		return &attestationv1.GetMachineResponse{}
	case procRegister:
		return &attestationv1.RegisterMachineResponse{}
	case procApprove:
		return &attestationv1.ApproveMachineResponse{}
	case procRevoke:
		return &attestationv1.RevokeMachineResponse{}
	case procSetRole:
		return &attestationv1.SetMachineRoleResponse{}
	case procReinstate:
		return &attestationv1.ReinstateMachineResponse{}
	case procEvents:
		return &attestationv1.ListEventsResponse{}
	case procExts:
		return &attestationv1.ListExtensionsResponse{}
	case attestationv1connect.AgentServiceRegisterProcedure:
		return &attestationv1.RegisterResponse{}
	case attestationv1connect.AgentServiceAttestProcedure:
		return &attestationv1.AttestResponse{}
	case attestationv1connect.AgentServiceHeartbeatProcedure:
		return &attestationv1.HeartbeatResponse{}
	case attestationv1connect.AgentServiceIssueCertificateProcedure:
		return &attestationv1.IssueCertificateResponse{}
	}
	panic("no response type for " + procedure)
}

// connectTransport uses the generated Connect clients.
type connectTransport struct {
	name          string
	machines      attestationv1connect.MachineServiceClient
	events        attestationv1connect.EventServiceClient
	extensions    attestationv1connect.ExtensionServiceClient
	agent         attestationv1connect.AgentServiceClient
	authorization string
}

func newConnectTransport(base, authorization string, opts ...connect.ClientOption) *connectTransport {
	return &connectTransport{
		name:          "connect",
		machines:      attestationv1connect.NewMachineServiceClient(http.DefaultClient, base, opts...),
		events:        attestationv1connect.NewEventServiceClient(http.DefaultClient, base, opts...),
		extensions:    attestationv1connect.NewExtensionServiceClient(http.DefaultClient, base, opts...),
		agent:         attestationv1connect.NewAgentServiceClient(http.DefaultClient, base, opts...),
		authorization: authorization,
	}
}

func (c *connectTransport) Name() string { return c.name }

func (c *connectTransport) Call(ctx context.Context, procedure string, req proto.Message) (proto.Message, error) {
	switch procedure {
	case procList:
		return connectCall(ctx, c.authorization, c.machines.ListMachines, req)
	case procGet:
		return connectCall(ctx, c.authorization, c.machines.GetMachine, req)
	case procRegister:
		return connectCall(ctx, c.authorization, c.machines.RegisterMachine, req)
	case procApprove:
		return connectCall(ctx, c.authorization, c.machines.ApproveMachine, req)
	case procRevoke:
		return connectCall(ctx, c.authorization, c.machines.RevokeMachine, req)
	case procSetRole:
		return connectCall(ctx, c.authorization, c.machines.SetMachineRole, req)
	case procReinstate:
		return connectCall(ctx, c.authorization, c.machines.ReinstateMachine, req)
	case procEvents:
		return connectCall(ctx, c.authorization, c.events.ListEvents, req)
	case procExts:
		return connectCall(ctx, c.authorization, c.extensions.ListExtensions, req)
	case attestationv1connect.AgentServiceRegisterProcedure:
		return connectCall(ctx, c.authorization, c.agent.Register, req)
	case attestationv1connect.AgentServiceAttestProcedure:
		return connectCall(ctx, c.authorization, c.agent.Attest, req)
	case attestationv1connect.AgentServiceHeartbeatProcedure:
		return connectCall(ctx, c.authorization, c.agent.Heartbeat, req)
	case attestationv1connect.AgentServiceIssueCertificateProcedure:
		return connectCall(ctx, c.authorization, c.agent.IssueCertificate, req)
	}
	return nil, fmt.Errorf("connect transport: unknown procedure %s", procedure)
}

func connectCall[Req, Res any](ctx context.Context, authorization string,
	fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg proto.Message,
) (proto.Message, error) {
	req := connect.NewRequest(any(msg).(*Req))
	if authorization != "" {
		req.Header().Set("Authorization", authorization)
	}
	res, err := fn(ctx, req)
	if err != nil {
		return nil, err
	}
	return any(res.Msg).(proto.Message), nil
}

// grpcTransport uses grpc-go without stubs: conn.Invoke by procedure name.
type grpcTransport struct {
	conn          *grpc.ClientConn
	authorization string
}

func dialGRPC(t *testing.T, d *daemontest.Daemon) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(d.Addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial gRPC %s: %v", d.Addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func grpcContext(ctx context.Context, authorization string) context.Context {
	if authorization == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
}

// grpcError turns a gRPC status into the equivalent *connect.Error (the
// codes are numerically the same).
func grpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
}

func (g *grpcTransport) Name() string { return "grpc" }

func (g *grpcTransport) Call(ctx context.Context, procedure string, req proto.Message) (proto.Message, error) {
	resp := newResponse(procedure)
	if err := g.conn.Invoke(grpcContext(ctx, g.authorization), procedure, req, resp); err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}

// restTransport maps procedures to the REST routes of the google.api.http
// annotations: path parameters from the request, the other fields in the
// query (GET) or the JSON body (POST).
type restTransport struct {
	base          string
	authorization string
}

var restRoutes = map[string]struct{ method, path string }{
	procList:      {http.MethodGet, "/api/v1/machines"},
	procGet:       {http.MethodGet, "/api/v1/machines/{id}"},
	procRegister:  {http.MethodPost, "/api/v1/register"},
	procApprove:   {http.MethodPost, "/api/v1/machines/{id}/approve"},
	procRevoke:    {http.MethodPost, "/api/v1/machines/{id}/revoke"},
	procSetRole:   {http.MethodPost, "/api/v1/machines/{id}/role"},
	procReinstate: {http.MethodPost, "/api/v1/machines/{id}/reinstate"},
	procEvents:    {http.MethodGet, "/api/v1/events"},
	procExts:      {http.MethodGet, "/api/v1/extensions"},
}

func (r *restTransport) Name() string { return "rest" }

func (r *restTransport) Call(ctx context.Context, procedure string, req proto.Message) (proto.Message, error) {
	route, ok := restRoutes[procedure]
	if !ok {
		return nil, fmt.Errorf("rest transport: no route for %s", procedure)
	}
	msg := proto.Clone(req).ProtoReflect()
	path := route.path
	if fd := msg.Descriptor().Fields().ByName("id"); fd != nil && strings.Contains(path, "{id}") {
		path = strings.Replace(path, "{id}", url.PathEscape(msg.Get(fd).String()), 1)
		msg.Clear(fd)
	}
	var body io.Reader
	if route.method == http.MethodGet {
		q := url.Values{}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			q.Set(string(fd.Name()), fmt.Sprint(v.Interface()))
			return true
		})
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
	} else {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg.Interface())
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	status, out, err := r.do(ctx, route.method, path, body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, restError(status, out)
	}
	if procedure == procExts {
		// response_body: "extensions": the body is the map itself.
		out = []byte(`{"extensions":` + string(out) + `}`)
	}
	resp := newResponse(procedure)
	if err := protojson.Unmarshal(out, resp); err != nil {
		return nil, fmt.Errorf("decode REST response %s: %w", out, err)
	}
	return resp, nil
}

// do sends one REST request and returns the status and body.
func (r *restTransport) do(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, body)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.authorization != "" {
		req.Header.Set("Authorization", r.authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			return 0, nil, fmt.Errorf("%s %s: HTTP %d with Content-Type %q, want application/json: %s", method, path, resp.StatusCode, ct, out)
		}
	}
	return resp.StatusCode, out, nil
}

// restStatus is the HTTP status the REST API answers each code with.
var restStatus = map[connect.Code]int{
	connect.CodeInvalidArgument:    http.StatusBadRequest,
	connect.CodeNotFound:           http.StatusNotFound,
	connect.CodeAlreadyExists:      http.StatusConflict,
	connect.CodeFailedPrecondition: http.StatusConflict,
	connect.CodeUnauthenticated:    http.StatusUnauthorized,
	connect.CodePermissionDenied:   http.StatusForbidden,
	connect.CodeUnimplemented:      http.StatusNotImplemented,
	connect.CodeInternal:           http.StatusInternalServerError,
}

// restError decodes a REST error body into a *connect.Error, checking that
// the HTTP status goes with the code.
func restError(status int, body []byte) error {
	// The body is a google.rpc.Status: a numeric code and a message.
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Code == 0 {
		return fmt.Errorf("HTTP %d with a body that is not a JSON error: %q", status, body)
	}
	code := connect.Code(e.Code)
	if want, ok := restStatus[code]; !ok || want != status {
		return connect.NewError(connect.CodeUnknown, fmt.Errorf("HTTP %d for code %s, want HTTP %d: %s", status, code, want, e.Message))
	}
	return connect.NewError(code, errors.New(e.Message))
}

// call invokes procedure over tr and fails the test on error.
func call[Res proto.Message](t *testing.T, tr transport, procedure string, req proto.Message) Res {
	t.Helper()
	resp, err := tr.Call(t.Context(), procedure, req)
	if err != nil {
		t.Fatalf("%s %s: %v", tr.Name(), procedure, err)
	}
	return resp.(Res)
}

// wantError checks that err is a *connect.Error with code, and that its
// message contains every one of contains.
func wantError(t *testing.T, err error, code connect.Code, contains ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got code %s (%v), want %s", got, err, code)
	}
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	for _, s := range contains {
		if !strings.Contains(msg, s) {
			t.Errorf("got message %q, want it to contain %q", msg, s)
		}
	}
}
