package api_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/extensions"
	_ "github.com/attestation/attestation/extensions/all"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// module is this module's path; repoRoot is its directory, from this
// package's.
const (
	module   = "github.com/attestation/attestation"
	repoRoot = "../.."
)

// noSuchRoute is a path segment no route has.
const noSuchRoute = "no-such-route"

// route is a path the daemon serves and the methods it serves it with.
type route struct {
	// path is a pattern: a literal path whose {variables} stand for one
	// segment each.
	path    string
	methods []string
	// authenticated routes answer 401 without a token.
	authenticated bool
}

// addRoute adds method on path to routes, keyed by path.
func addRoute(routes map[string]*route, path, method string, authenticated bool) {
	r := routes[path]
	if r == nil {
		r = &route{path: path, authenticated: authenticated}
		routes[path] = r
	}
	if method != "" && !slices.Contains(r.methods, method) {
		r.methods = append(r.methods, method)
	}
}

// coreRESTRoutes are the REST routes of the core: the google.api.http
// options of the services the API serves, which the transcoder routes by.
func coreRESTRoutes(t *testing.T) map[string]*route {
	t.Helper()
	routes := map[string]*route{}
	services := append(slices.Clone(api.OperatorServices), attestationv1connect.AgentServiceName)
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			rule, _ := proto.GetExtension(methods.Get(i).Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				method, path := httpRule(t, r)
				addRoute(routes, path, method, slices.Contains(api.OperatorServices, name))
			}
		}
	}
	if len(routes) == 0 {
		t.Fatal("the services have no REST routes")
	}
	return routes
}

func httpRule(t *testing.T, r *annotations.HttpRule) (method, path string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete
	}
	t.Fatalf("HTTP rule %v: a pattern this test does not know", r)
	return "", ""
}

// handleCalls returns the patterns of the Handle and HandleFunc calls in
// n whose pattern is a string literal, or a string constant of a package
// of this module (file's imports say which), and how many calls have a
// pattern that is neither.
func handleCalls(t *testing.T, file *ast.File, n ast.Node) (patterns []string, computed int) {
	t.Helper()
	ast.Inspect(n, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		if sel, ok := call.Fun.(*ast.SelectorExpr); !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
			return true
		}
		if p, ok := stringConstant(t, file, call.Args[0]); ok {
			patterns = append(patterns, p)
		} else {
			computed++
		}
		return true
	})
	return patterns, computed
}

// stringConstant returns the value of e when it is a string literal or
// names a string constant of a package of this module.
func stringConstant(t *testing.T, file *ast.File, e ast.Expr) (string, bool) {
	t.Helper()
	switch e := e.(type) {
	case *ast.BasicLit:
		if s, err := strconv.Unquote(e.Value); err == nil && e.Kind == token.STRING {
			return s, true
		}
	case *ast.SelectorExpr:
		pkg, ok := e.X.(*ast.Ident)
		if !ok {
			return "", false
		}
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			rel, inModule := strings.CutPrefix(path, module+"/")
			if !inModule || (imp.Name == nil && filepath.Base(path) != pkg.Name) || (imp.Name != nil && imp.Name.Name != pkg.Name) {
				continue
			}
			for _, f := range parseDir(t, filepath.Join(repoRoot, rel)) {
				if obj := f.Scope.Lookup(e.Sel.Name); obj != nil && obj.Kind == ast.Con {
					if spec, ok := obj.Decl.(*ast.ValueSpec); ok && len(spec.Values) == 1 {
						return stringConstant(t, f, spec.Values[0])
					}
				}
			}
		}
	}
	return "", false
}

// parseDir parses the Go files of dir but its tests.
func parseDir(t *testing.T, dir string) []*ast.File {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// corePatterns are the patterns the core registers on the daemon's mux
// with a constant pattern (/healthz, /config/{token}, ...), read from the
// source of the packages that build the mux. The others are the Connect
// services' procedures, which answer in their own protocols, and the
// extensions' prefixes, whose routes extensionRoutes lists.
func corePatterns(t *testing.T) []string {
	t.Helper()
	var patterns []string
	for _, dir := range []string{".", "../daemon"} {
		for _, f := range parseDir(t, dir) {
			p, _ := handleCalls(t, f, f)
			patterns = append(patterns, p...)
		}
	}
	if !slices.Contains(patterns, "GET /healthz") {
		t.Fatalf("the core's patterns %q have no GET /healthz: this test no longer finds them", patterns)
	}
	return patterns
}

// extensionRoutes are the routes of every compiled-in extension, read from
// the source of its Routes method, under /api/v1/<name>. Routes must
// register only with literal patterns on its mux, so that none is missed,
// and each pattern read must be one that a mux Routes fills has.
func extensionRoutes(t *testing.T) map[string]*route {
	t.Helper()
	routes := map[string]*route{}
	for _, ext := range extensions.All() {
		router, ok := ext.(extensions.Router)
		if !ok {
			continue
		}
		name := ext.Info().Name
		method, _ := reflect.TypeOf(ext).MethodByName("Routes")
		file, _ := runtime.FuncForPC(method.Func.Pointer()).FileLine(method.Func.Pointer())
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatalf("extension %s: %v", name, err)
		}
		var decl *ast.FuncDecl
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil && fd.Name.Name == "Routes" {
				decl = fd
			}
		}
		if decl == nil || len(decl.Type.Params.List) != 1 || len(decl.Type.Params.List[0].Names) != 1 {
			t.Fatalf("extension %s: no Routes(mux *http.ServeMux) in %s", name, file)
		}
		patterns, computed := handleCalls(t, f, decl.Body)
		if computed > 0 || len(patterns) == 0 || muxEscapes(decl.Body, decl.Type.Params.List[0].Names[0].Name) {
			t.Fatalf("extension %s: Routes in %s registers routes other than with mux.Handle(\"METHOD /literal\", ...): this test cannot list them", name, file)
		}
		mux := http.NewServeMux()
		router.Routes(mux)
		for _, p := range patterns {
			method, path := splitPattern(p)
			req, _ := http.NewRequest(orElse(method, http.MethodGet), "http://daemon"+samplePath(path), nil)
			if _, got := mux.Handler(req); got != p {
				t.Fatalf("extension %s: pattern %q read from Routes, but its mux matches %q", name, p, got)
			}
			addRoute(routes, "/api/v1/"+name+path, method, true)
		}
	}
	if len(routes) == 0 {
		t.Fatal("no extension has routes: this test no longer finds them")
	}
	return routes
}

// muxEscapes reports whether body uses the variable mux other than to
// call its Handle or HandleFunc.
func muxEscapes(body *ast.BlockStmt, mux string) bool {
	receivers := map[*ast.Ident]bool{}
	ast.Inspect(body, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Handle" || sel.Sel.Name == "HandleFunc") {
			if id, ok := sel.X.(*ast.Ident); ok {
				receivers[id] = true
			}
		}
		return true
	})
	escapes := false
	ast.Inspect(body, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && id.Name == mux && !receivers[id] {
			escapes = true
		}
		return true
	})
	return escapes
}

// orElse is s, or otherwise when s is "".
func orElse(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

// splitPattern splits a ServeMux pattern into its method (maybe "") and
// path.
func splitPattern(p string) (method, path string) {
	if m, path, ok := strings.Cut(p, " "); ok {
		return m, strings.TrimSpace(path)
	}
	return "", p
}

// samplePath fills the {variables} of a pattern with a UUID, which every
// route takes where it takes an ID.
func samplePath(pattern string) string {
	segs := strings.Split(pattern, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") {
			segs[i] = unknownID
		}
	}
	return strings.Join(segs, "/")
}

// matches reports whether path is one a pattern of routes, but the
// pattern except, matches.
func matches(routes map[string]*route, path, except string) bool {
	for p := range routes {
		if p == except {
			continue
		}
		if strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) {
			return true // a pattern of a subtree
		}
		want, got := strings.Split(p, "/"), strings.Split(path, "/")
		if len(want) != len(got) {
			continue
		}
		same := true
		for i := range want {
			same = same && (want[i] == got[i] || strings.HasPrefix(want[i], "{"))
		}
		if same {
			return true
		}
	}
	return false
}

// sibling is a path under the route's that no other route of routes
// serves (nor r, unless it is a subtree's pattern: then its handler does).
func sibling(t *testing.T, routes map[string]*route, r *route) string {
	t.Helper()
	path := strings.TrimSuffix(samplePath(r.path), "/")
	for range 3 {
		path += "/" + noSuchRoute
		if !matches(routes, path, r.path) {
			return path
		}
	}
	t.Fatalf("every path under %s is a route: no unknown sibling to ask for", r.path)
	return ""
}

// wrongMethod is a method r is not served with.
func wrongMethod(t *testing.T, r *route) string {
	t.Helper()
	for _, m := range []string{http.MethodPatch, http.MethodDelete, http.MethodPut, http.MethodPost, http.MethodGet} {
		if !slices.Contains(r.methods, m) {
			return m
		}
	}
	t.Fatalf("%s is served with every method: no wrong one to ask with", r.path)
	return ""
}

// routeClient sends requests to the daemon and checks that the errors
// have the core's shape.
type routeClient struct {
	d *daemontest.Daemon
}

// do sends method path with body (none when "") as JSON, and with the
// admin token when authenticated.
func (c routeClient) do(t *testing.T, method, path, body string, authenticated bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.d.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authenticated {
		req.Header.Set("Authorization", bearer(c.d.Token))
	}
	resp, err := http.DefaultClient.Do(req)
	var b []byte
	if err == nil {
		defer resp.Body.Close()
		b, err = io.ReadAll(resp.Body)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// emptyBody is the body of a request with method: "{}" when it takes one.
func emptyBody(method string) string {
	if method == http.MethodGet || method == http.MethodHead || method == http.MethodDelete {
		return ""
	}
	return "{}"
}

// wantError fails unless the answer is HTTP status with an error in the
// core's shape: a JSON object of exactly a numeric code, a message and
// maybe details (an array). It returns the message.
func (c routeClient) wantError(t *testing.T, method, path string, resp *http.Response, body []byte, status int, code connect.Code) string {
	t.Helper()
	var e struct {
		Code    *int               `json:"code"`
		Message *string            `json:"message"`
		Details *[]json.RawMessage `json:"details"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(&e)
	switch {
	case resp.StatusCode != status:
		t.Errorf("%s %s: got HTTP %d %q, want %d", method, path, resp.StatusCode, body, status)
	case resp.Header.Get("Content-Type") != "application/json":
		t.Errorf("%s %s: got Content-Type %q (%q), want application/json", method, path, resp.Header.Get("Content-Type"), body)
	case err != nil || dec.Decode(&struct{}{}) != io.EOF:
		t.Errorf("%s %s: got body %q, want one JSON object of code, message and details (%v)", method, path, body, err)
	case e.Code == nil || e.Message == nil || *e.Message == "":
		t.Errorf("%s %s: got body %q, want a code and a message", method, path, body)
	case connect.Code(*e.Code) != code:
		t.Errorf("%s %s: got code %d (%s), want %d (%s): %s", method, path, *e.Code, connect.Code(*e.Code), code, code, *e.Message)
	default:
		return *e.Message
	}
	return ""
}

// wantNoRoute checks the answer to a path no route serves.
func (c routeClient) wantNoRoute(t *testing.T, path string) {
	t.Helper()
	resp, body := c.do(t, http.MethodGet, path, "", true)
	msg := c.wantError(t, http.MethodGet, path, resp, body, http.StatusNotFound, connect.CodeUnimplemented)
	if want := "GET " + path; msg != "" && !strings.Contains(msg, want) {
		t.Errorf("GET %s: got message %q, want it to name %q", path, msg, want)
	}
}

// wantWrongMethod checks the answer to a method r is not served with.
func (c routeClient) wantWrongMethod(t *testing.T, r *route) {
	t.Helper()
	method, path := wrongMethod(t, r), samplePath(r.path)
	resp, body := c.do(t, method, path, emptyBody(method), true)
	msg := c.wantError(t, method, path, resp, body, http.StatusMethodNotAllowed, connect.CodeUnimplemented)
	allow := strings.Split(resp.Header.Get("Allow"), ", ")
	for _, m := range r.methods {
		if !slices.Contains(allow, m) || (msg != "" && !strings.Contains(msg, m)) {
			t.Errorf("%s %s: got Allow %q and message %q, want both to list %s", method, path, resp.Header.Get("Allow"), msg, m)
		}
	}
	for _, m := range allow {
		if !slices.Contains(r.methods, m) && (m != http.MethodHead || !slices.Contains(r.methods, http.MethodGet)) {
			t.Errorf("%s %s: got Allow %q, which lists %s: the route serves %v", method, path, resp.Header.Get("Allow"), m, r.methods)
		}
	}
	if msg != "" && !strings.Contains(msg, method) {
		t.Errorf("%s %s: got message %q, want it to name the method", method, path, msg)
	}
}

// wantRouteErrors asks r what it must refuse. routes are all the routes
// under r's prefix, of which the unknown path asked for must be none.
func (c routeClient) wantRouteErrors(t *testing.T, r *route, routes map[string]*route) {
	t.Helper()
	// A pattern without a method leaves methods to its handler: the REST
	// transcoder (whose routes are listed apart), the agent's config
	// fetch (plain text, as the agent reads it).
	if len(r.methods) > 0 {
		c.wantWrongMethod(t, r)
	}
	if r.authenticated {
		for _, m := range r.methods {
			resp, body := c.do(t, m, samplePath(r.path), emptyBody(m), false)
			c.wantError(t, m, samplePath(r.path), resp, body, http.StatusUnauthorized, connect.CodeUnauthenticated)
		}
	}
	c.wantNoRoute(t, sibling(t, routes, r))
}

// TestRouteErrors asks every route of the daemon, the core's and the
// extensions', what it must refuse: a method it is not served with (405
// with Allow), a request without a token where one is needed (401) and a
// path under it that no route has (404). Each answers in the core REST
// API's error shape, and so do errors of the extensions' own handlers.
func TestRouteErrors(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{Extensions: extensions.All()})
	c := routeClient{d: d}
	core, exts := coreRESTRoutes(t), extensionRoutes(t)
	plain := map[string]*route{}
	for _, p := range corePatterns(t) {
		method, path := splitPattern(p)
		addRoute(plain, path, method, false)
	}
	for _, set := range []struct {
		name           string
		routes, others map[string]*route
	}{{"core", core, nil}, {"extensions", exts, nil}, {"plain", plain, core}} {
		t.Run(set.name, func(t *testing.T) {
			for _, r := range set.routes {
				c.wantRouteErrors(t, r, merge(set.routes, set.others))
			}
		})
	}

	t.Run("no route", func(t *testing.T) {
		for _, path := range []string{"/" + noSuchRoute, "/api/" + noSuchRoute, "/api/v1/", "/api/v1/" + noSuchRoute} {
			c.wantNoRoute(t, path)
		}
		for _, ext := range extensions.All() {
			if _, ok := ext.(extensions.Router); ok {
				c.wantNoRoute(t, "/api/v1/"+ext.Info().Name+"/")
			}
		}
	})

	t.Run("unknown procedure", func(t *testing.T) {
		conn := dialGRPC(t, d)
		services := append(slices.Clone(api.OperatorServices), attestationv1connect.AgentServiceName,
			"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection")
		for _, service := range services {
			path := "/" + service + "/NoSuchProcedure"
			resp, body := c.do(t, http.MethodPost, path, "{}", true)
			c.wantError(t, http.MethodPost, path, resp, body, http.StatusNotFound, connect.CodeUnimplemented)
			// Connect and gRPC clients read it as their protocols say.
			client := connect.NewClient[emptypb.Empty, emptypb.Empty](http.DefaultClient, d.URL+path)
			if _, err := client.CallUnary(t.Context(), connect.NewRequest(&emptypb.Empty{})); connect.CodeOf(err) != connect.CodeUnimplemented {
				t.Errorf("Connect %s: got %v, want unimplemented", path, err)
			}
			err := conn.Invoke(t.Context(), path, &emptypb.Empty{}, &emptypb.Empty{})
			if status.Code(err) != codes.Unimplemented {
				t.Errorf("gRPC %s: got %v, want unimplemented", path, err)
			}
		}
	})

	t.Run("extension handlers", func(t *testing.T) {
		tags := "/api/v1/tags/machines/" + unknownID + "/tags"
		resp, body := c.do(t, http.MethodGet, tags, "", true)
		c.wantError(t, http.MethodGet, tags, resp, body, http.StatusNotFound, connect.CodeNotFound)

		id := registerMachine(t, c)
		tags = "/api/v1/tags/machines/" + id + "/tags"
		for _, bad := range []string{`{"nope": 1}`, `{"key": "Bad Key"}`, `[`} {
			resp, body := c.do(t, http.MethodPost, tags, bad, true)
			c.wantError(t, http.MethodPost, tags+" "+bad, resp, body, http.StatusBadRequest, connect.CodeInvalidArgument)
		}

		for _, tc := range []struct {
			method, path string
			status       int
			code         connect.Code
		}{
			{http.MethodPost, "/api/v1/webhook/targets/nope/test", http.StatusNotFound, connect.CodeNotFound},
			{http.MethodGet, "/api/v1/webhook/deliveries?status=lost", http.StatusBadRequest, connect.CodeInvalidArgument},
		} {
			resp, body := c.do(t, tc.method, tc.path, "", true)
			c.wantError(t, tc.method, tc.path, resp, body, tc.status, tc.code)
		}
	})
}

// merge returns the routes of a and b.
func merge(a, b map[string]*route) map[string]*route {
	m := map[string]*route{}
	for _, routes := range []map[string]*route{a, b} {
		for p, r := range routes {
			m[p] = r
		}
	}
	return m
}

// registerMachine pre-registers a machine over REST and returns its ID.
func registerMachine(t *testing.T, c routeClient) string {
	t.Helper()
	resp, body := c.do(t, http.MethodPost, "/api/v1/register", `{
		"ek_fingerprint": "5d2f0c1b8e4a7f3d9c6b2a1e0f8d7c6b5a4e3d2c1b0a9f8e7d6c5b4a3e2d1c0b",
		"macs": ["52:54:00:12:34:56"], "role": "worker", "hostname": "node-1"}`, true)
	var out struct {
		Machine struct{ ID string } `json:"machine"`
	}
	if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != http.StatusOK || out.Machine.ID == "" {
		t.Fatalf("register a machine: HTTP %d %s (%v)", resp.StatusCode, body, err)
	}
	return out.Machine.ID
}
