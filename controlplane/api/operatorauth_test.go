package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/auth/authtest"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/extensions"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// wantRoles is the role each operator procedure and extension route
// needs: the contract, written here apart from the code that enforces
// it. A procedure or route missing from it fails TestRoleMatrix.
var wantRoles = map[string]string{
	"MachineService/ListMachines":      "viewer",
	"MachineService/GetMachine":        "viewer",
	"MachineService/RegisterMachine":   "operator",
	"MachineService/ApproveMachine":    "operator",
	"MachineService/RevokeMachine":     "operator",
	"MachineService/SetMachineRole":    "operator",
	"MachineService/ReinstateMachine":  "operator",
	"EventService/ListEvents":          "viewer",
	"EventService/WatchEvents":         "viewer",
	"ExtensionService/ListExtensions":  "viewer",
	"SchematicService/GetSchematic":    "viewer",
	"SchematicService/ListSchematics":  "viewer",
	"SchematicService/CreateSchematic": "admin",
	"SchematicService/BuildImage":      "admin",
	"ConfigService/SetConfig":          "admin",
	"ConfigService/GetConfig":          "admin",
	"ConfigService/ListConfigs":        "admin",
	"ConfigService/DeleteConfig":       "admin",
	"AuditService/ListAuditRecords":    "viewer",

	"GET /api/v1/tags/machines":                               "viewer",
	"GET /api/v1/tags/machines/{machine_id}/tags":             "viewer",
	"POST /api/v1/tags/machines/{machine_id}/tags":            "operator",
	"DELETE /api/v1/tags/machines/{machine_id}/tags/{tag_id}": "operator",
	"GET /api/v1/webhook/targets":                             "viewer",
	"GET /api/v1/webhook/deliveries":                          "viewer",
	"POST /api/v1/webhook/targets/{name}/test":                "admin",
}

// publicPatterns are the only routes of the daemon's mux served without
// an operator token: health, readiness, metrics (unless --metrics-auth),
// the one-time config fetch, and the REST transcoder's prefix, whose
// routes are the operator services' (each proved to need a token).
// Boot scripts and assets (/boot/, /images/) are served in front of the
// mux; the agent's procedures prove themselves with the TPM and session.
var publicPatterns = []string{"/api/v1/", "GET /healthz", "GET /readyz", "GET /metrics", "/config/{token}"}

// oidcDaemon starts a daemon that accepts the issuer's tokens (and
// machines without a TPM, for an agent session credential).
func oidcDaemon(t *testing.T, iss *authtest.Issuer, edit func(*config.Config)) *daemontest.Daemon {
	t.Helper()
	return daemontest.Start(t, daemontest.Options{Extensions: extensions.All(), Config: func(c *config.Config) {
		c.OIDCIssuer, c.AllowNoTPM = iss.URL, true
		if edit != nil {
			edit(c)
		}
	}})
}

// procedure is an operator procedure of the core.
type procedure struct {
	path      string // /attestation.v1.MachineService/ListMachines
	key       string // MachineService/ListMachines
	streaming bool
}

// operatorProcedures lists every procedure of the operator services.
func operatorProcedures(t *testing.T) []procedure {
	t.Helper()
	var out []procedure
	for _, name := range api.OperatorServices {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for i := range sd.Methods().Len() {
			m := sd.Methods().Get(i)
			out = append(out, procedure{
				path:      "/" + name + "/" + string(m.Name()),
				key:       string(sd.Name()) + "/" + string(m.Name()),
				streaming: m.IsStreamingServer(),
			})
		}
	}
	return out
}

// call calls a procedure over Connect with an empty request (an empty
// message decodes as any) and returns its error; a stream's is that of
// its first message, and a stream that is still open after a moment
// was let in.
func (p procedure) call(ctx context.Context, baseURL, authorization string) error {
	client := connect.NewClient[emptypb.Empty, emptypb.Empty](http.DefaultClient, baseURL+p.path)
	req := connect.NewRequest(&emptypb.Empty{})
	if authorization != "" {
		req.Header().Set("Authorization", authorization)
	}
	if !p.streaming {
		_, err := client.CallUnary(ctx, req)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	s, err := client.CallServerStream(ctx, req)
	if err != nil {
		return err
	}
	defer s.Close()
	s.Receive()
	if err := s.Err(); err != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	return nil
}

// agentSession enrolls a machine without a TPM and returns its agent's
// session credential.
func agentSession(t *testing.T, d *daemontest.Daemon) string {
	t.Helper()
	agent := attestationv1connect.NewAgentServiceClient(http.DefaultClient, d.URL)
	reg, err := agent.Register(t.Context(), connect.NewRequest(&attestationv1.RegisterRequest{
		Hardware: &attestationv1.Hardware{SmbiosUuid: "4c4c4544-0000-0000-0000-00000000a6e7", Macs: []string{"52:54:00:aa:bb:01"}}}))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	att, err := agent.Attest(t.Context(), connect.NewRequest(&attestationv1.AttestRequest{ChallengeId: reg.Msg.ChallengeId}))
	if err != nil || att.Msg.SessionToken == "" {
		t.Fatalf("Attest: %v, %v; want a session", att, err)
	}
	return att.Msg.SessionToken
}

// eventCount is how many events the daemon has written.
func eventCount(t *testing.T, d *daemontest.Daemon) int {
	t.Helper()
	c := attestationv1connect.NewEventServiceClient(http.DefaultClient, d.URL)
	req := connect.NewRequest(&attestationv1.ListEventsRequest{PageSize: 1000})
	req.Header().Set("Authorization", bearer(d.Token))
	resp, err := c.ListEvents(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Msg.Events)
}

// TestOperatorRoutesRefuse proves that every route and procedure but the
// public ones, the extensions' included, refuses a missing, expired,
// wrongly signed, wrong-issuer and wrong-audience token and an agent's
// session credential, each with 401 unauthenticated, changing nothing;
// and that exactly the public routes are served without a token.
func TestOperatorRoutesRefuse(t *testing.T) {
	iss, other := authtest.Start(t), authtest.Start(t)
	d := oidcDaemon(t, iss, nil)
	admin := func(edit func(authtest.Claims)) authtest.Claims {
		c := iss.Claims("mallory", "admin")
		edit(c)
		return c
	}
	creds := []struct{ name, authorization string }{
		{"missing", ""},
		{"expired", bearer(iss.Token(t, admin(func(c authtest.Claims) { c["exp"] = time.Now().Add(-10 * time.Minute).Unix() })))},
		{"wrongly signed", bearer(iss.Forged(t, admin(func(authtest.Claims) {})))},
		{"wrong issuer", bearer(iss.Token(t, admin(func(c authtest.Claims) { c["iss"] = other.URL })))},
		{"another issuer's", bearer(other.Token(t, admin(func(c authtest.Claims) { c["iss"] = other.URL })))},
		{"wrong audience", bearer(iss.Token(t, admin(func(c authtest.Claims) { c["aud"] = []string{"account"}; c["azp"] = "other-client" })))},
		{"agent session", bearer(agentSession(t, d))},
	}
	before := eventCount(t, d)
	c := routeClient{d: d}

	conn := dialGRPC(t, d)
	for _, cr := range creds {
		for _, p := range operatorProcedures(t) {
			err := p.call(t.Context(), d.URL, cr.authorization)
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("%s with a %s token: got %v, want unauthenticated", p.path, cr.name, err)
			}
		}
		// gRPC reflection describes the API: operators' too.
		if _, err := listServices(t.Context(), conn, cr.authorization); connect.CodeOf(grpcError(err)) != connect.CodeUnauthenticated {
			t.Errorf("gRPC reflection with a %s token: got %v, want unauthenticated", cr.name, err)
		}
	}

	rest := merge(coreRESTRoutes(t), extensionRoutes(t))
	for _, r := range rest {
		if !r.authenticated {
			continue
		}
		for _, m := range r.methods {
			path := samplePath(r.path)
			for _, cr := range creds {
				req, _ := http.NewRequest(m, d.URL+path, strings.NewReader(emptyBody(m)))
				if cr.authorization != "" {
					req.Header.Set("Authorization", cr.authorization)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s %s with a %s token: got HTTP %d, want 401", m, path, cr.name, resp.StatusCode)
				}
			}
		}
	}
	if after := eventCount(t, d); after != before {
		t.Errorf("refused calls changed something: %d events before, %d after", before, after)
	}

	patterns := slices.Sorted(slices.Values(corePatterns(t)))
	want := slices.Sorted(slices.Values(publicPatterns))
	if !slices.Equal(patterns, want) {
		t.Errorf("the mux's own patterns are %q, want exactly the public ones %q: a new route must be behind operator authentication or added to publicPatterns with a reason", patterns, want)
	}
	resp, _ := c.do(t, http.MethodGet, "/metrics", "", false)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics without a token: HTTP %d, want 200 (public by default)", resp.StatusCode)
	}
}

// TestMetricsAuth: with --metrics-auth, /metrics needs a viewer's token.
func TestMetricsAuth(t *testing.T) {
	iss := authtest.Start(t)
	d := oidcDaemon(t, iss, func(c *config.Config) { c.MetricsAuth = true })
	for _, tc := range []struct {
		name, authorization string
		status              int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"no role", bearer(iss.Token(t, iss.Claims("nobody"))), http.StatusForbidden},
		{"viewer", bearer(iss.Token(t, iss.Claims("vera", "viewer"))), http.StatusOK},
		{"admin token", bearer(d.Token), http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, d.URL+"/metrics", nil)
		if tc.authorization != "" {
			req.Header.Set("Authorization", tc.authorization)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: GET /metrics: HTTP %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
}

// TestRoleMatrix calls every operator procedure and extension route with
// a token of each role (and of none) and checks who is let in: a role at
// least the one wantRoles names, or the admin token. One refused gets
// permission_denied (403) naming the role it needs.
func TestRoleMatrix(t *testing.T) {
	iss := authtest.Start(t)
	d := oidcDaemon(t, iss, nil)
	type caller struct {
		name, authorization string
		rank                int
	}
	callers := []caller{
		{"no role", bearer(iss.Token(t, iss.Claims("nobody"))), 0},
		{"viewer", bearer(iss.Token(t, iss.Claims("vera", "viewer"))), 1},
		{"operator", bearer(iss.Token(t, iss.Claims("otto", "operator"))), 2},
		{"admin", bearer(iss.Token(t, iss.Claims("ada", "admin"))), 3},
		{"admin token", bearer(d.Token), 3},
	}
	rank := map[string]int{"viewer": 1, "operator": 2, "admin": 3}
	seen := map[string]bool{}
	check := func(what, need string, code connect.Code, msg string, cl caller) {
		t.Helper()
		denied := code == connect.CodePermissionDenied
		switch {
		case code == connect.CodeUnauthenticated:
			t.Errorf("%s as %s: unauthenticated (%s)", what, cl.name, msg)
		case cl.rank >= rank[need] && denied:
			t.Errorf("%s as %s: denied (%s), want let in: it needs %s", what, cl.name, msg, need)
		case cl.rank < rank[need] && !denied:
			t.Errorf("%s as %s: let in (%v %s), want permission_denied: it needs %s", what, cl.name, code, msg, need)
		case denied && !strings.Contains(msg, "needs the "+need+" role"):
			t.Errorf("%s as %s: denied with %q, want the message to name the %s role", what, cl.name, msg, need)
		}
	}

	for _, p := range operatorProcedures(t) {
		need, ok := wantRoles[p.key]
		if !ok {
			t.Errorf("procedure %s is not in wantRoles: declare its role in api's procedureRoles and here", p.key)
			continue
		}
		seen[p.key] = true
		for _, cl := range callers {
			err := p.call(t.Context(), d.URL, cl.authorization)
			var ce *connect.Error
			msg := ""
			if errors.As(err, &ce) {
				msg = ce.Message()
			}
			check(p.key, need, connect.CodeOf(err), msg, cl)
		}
	}

	c := routeClient{d: d}
	for _, r := range extensionRoutes(t) {
		for _, m := range r.methods {
			key := m + " " + r.path
			need, ok := wantRoles[key]
			if !ok {
				t.Errorf("extension route %s is not in wantRoles: declare its role with extensions.Require and here", key)
				continue
			}
			seen[key] = true
			for _, cl := range callers {
				path := samplePath(r.path)
				req, _ := http.NewRequest(m, d.URL+path, strings.NewReader(emptyBody(m)))
				req.Header.Set("Authorization", cl.authorization)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				code := connect.Code(0)
				msg := ""
				switch resp.StatusCode {
				case http.StatusForbidden:
					msg = c.wantError(t, m, path, resp, readAll(t, resp), http.StatusForbidden, connect.CodePermissionDenied)
					code = connect.CodePermissionDenied
				case http.StatusUnauthorized:
					code = connect.CodeUnauthenticated
				}
				resp.Body.Close()
				check(key, need, code, msg, cl)
			}
		}
	}
	for key := range wantRoles {
		if !seen[key] {
			t.Errorf("wantRoles lists %s, which the daemon does not serve", key)
		}
	}
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExtensionRoleEscapedPath: an escaped slash in a route's wildcard
// ("a%2Fb") does not hide the route from the role check, which must see
// the path as the extension's mux routes it.
func TestExtensionRoleEscapedPath(t *testing.T) {
	iss := authtest.Start(t)
	d := oidcDaemon(t, iss, nil)
	viewer := bearer(iss.Token(t, iss.Claims("vera", "viewer")))
	for _, path := range []string{"/api/v1/webhook/targets/a%2Fb/test", "/api/v1/tags/machines/a%2Fb/tags"} {
		req, _ := http.NewRequest(http.MethodPost, d.URL+path, strings.NewReader("{}"))
		req.Header.Set("Authorization", viewer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s as a viewer: got %s %s, want 403", path, resp.Status, body)
		}
	}
}
