// Package api serves the control plane's API on one listener: Connect,
// gRPC and gRPC-Web for every service, REST/JSON under /api/v1 transcoded
// from the same handlers (vanguard), gRPC health and reflection, /healthz,
// /readyz and Prometheus /metrics.
//
// Operator services require a bearer token (package auth); the agent
// service does not, because agents prove themselves with their TPM.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
	"connectrpc.com/vanguard"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/configs"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/listener"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/images/cache"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// Options are what the API is built from.
type Options struct {
	Store    *store.Store
	Machines *machines.Service
	// Configs serves ConfigService (nil: a service on Store).
	Configs *configs.Service
	// Committed is notified after every commit; WatchEvents waits on it.
	Committed *events.Signal
	// Stopping is closed when the server shuts down; streams end then.
	Stopping <-chan struct{}
	Auth     auth.Authenticator
	// Agent serves AgentService; nil leaves every agent call Unimplemented.
	Agent attestationv1connect.AgentServiceHandler
	// Extensions lists the loaded extensions (nil: none).
	Extensions func() []Extension
	// Registry receives the API metrics and is served on /metrics.
	Registry *prometheus.Registry
	// MetricsAuth makes /metrics require a viewer's token.
	MetricsAuth bool
	// Ready reports whether the daemon can serve (nil: always).
	Ready func(context.Context) error
	// Notes are lines /readyz adds below its status: what works less
	// than it could without making the daemon unready (nil: none).
	Notes func() []string
	// Images builds schematics' images (nil: BuildImage is refused and
	// schematics' modules are not checked against the boot assets).
	Images *cache.Cache
	// Limits caps request bodies (nil: DefaultMaxRequestBytes, registered
	// on Registry). The daemon puts its Middleware in front of every route.
	Limits *Limits
	Logger *slog.Logger
}

// compressMinBytes: a Connect response smaller than this is not
// compressed. Most of the API's messages are a few hundred bytes.
const compressMinBytes = 4 << 10

// OperatorServices are the services behind operator auth.
var OperatorServices = []string{
	attestationv1connect.MachineServiceName,
	attestationv1connect.EventServiceName,
	attestationv1connect.ExtensionServiceName,
	attestationv1connect.ConfigServiceName,
	attestationv1connect.SchematicServiceName,
	attestationv1connect.AuditServiceName,
}

// Handler returns the API's HTTP handler and a mux under it on which more
// routes (extensions', boot's) can be mounted. Every request through the
// handler gets an ID (audit.RequestIDs).
func Handler(o Options) (http.Handler, *http.ServeMux, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Agent == nil {
		o.Agent = attestationv1connect.UnimplementedAgentServiceHandler{}
	}
	if o.Committed == nil {
		o.Committed = &events.Signal{}
	}
	if o.Configs == nil {
		o.Configs = configs.NewService(o.Store)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Limits == nil {
		o.Limits = NewLimits(DefaultMaxRequestBytes, o.Registry, o.Logger)
	}
	m := newMetrics(o.Registry, o.Store)
	if o.Auth != nil {
		o.Auth = RecordActors(o.Auth) // names the audit trail's actors
	}
	audited := &auditor{store: o.Store, log: o.Logger}
	validator := validate.NewInterceptor()
	logErrors := errorLogger(o.Logger)
	// Responses under compressMinBytes go out as they are, whatever the
	// client accepts: gzip costs more CPU than it saves on them. Clipped,
	// so that the appends below each get an array of their own.
	limits := slices.Clip(append(o.Limits.HandlerOptions(), connect.WithCompressMinBytes(compressMinBytes)))
	operator := connect.WithHandlerOptions(append(limits, connect.WithInterceptors(m, logErrors, audited, auth.NewInterceptor(o.Auth, RequiredRole), validator))...)
	agent := connect.WithHandlerOptions(append(limits, connect.WithInterceptors(m, logErrors, validator))...)

	mux := http.NewServeMux()
	procedures := func(path string, h http.Handler) { handleProcedures(mux, path, h, nil) }
	var services []*vanguard.Service
	mount := func(path string, h http.Handler) {
		procedures(path, h)
		services = append(services, vanguard.NewService(path, h))
	}
	mount(attestationv1connect.NewMachineServiceHandler(&machineService{machines: o.Machines, store: o.Store}, operator))
	mount(attestationv1connect.NewEventServiceHandler(&eventService{store: o.Store, committed: o.Committed, stopping: o.Stopping}, operator))
	mount(attestationv1connect.NewExtensionServiceHandler(&extensionService{list: o.Extensions}, operator))
	mount(attestationv1connect.NewConfigServiceHandler(&configService{configs: o.Configs}, operator))
	mount(attestationv1connect.NewSchematicServiceHandler(&schematicService{store: o.Store, images: o.Images}, operator))
	mount(attestationv1connect.NewAuditServiceHandler(&auditService{store: o.Store}, operator))
	// Agents past attestation authenticate with their node certificate:
	// the agent API reads it from the context (listener.PeerCertificate).
	agentPath, agentHandler := attestationv1connect.NewAgentServiceHandler(o.Agent, agent)
	// WatchApproval flushes before it waits (FlushHeld).
	handleProcedures(mux, agentPath, listener.WithPeer(agentHandler), map[string]http.Handler{
		attestationv1connect.AgentServiceWatchApprovalProcedure: listener.WithPeer(HoldFlushes(agentHandler)),
	})

	transcoder, err := vanguard.NewTranscoder(services, append(o.Limits.TranscoderOptions(),
		vanguard.WithCodec(restCodec),
		// Always re-encode, so REST JSON comes from restCodec.
		vanguard.WithDefaultServiceOptions(vanguard.WithTargetCodecs(vanguard.CodecProto)))...)
	if err != nil {
		return nil, nil, fmt.Errorf("build REST transcoder: %w", err)
	}
	rules, err := pathRules(OperatorServices)
	if err != nil {
		return nil, nil, fmt.Errorf("read the REST routes: %w", err)
	}
	mux.Handle("/api/v1/", restErrors(transcoder, rules))

	all := append(append([]string{}, OperatorServices...), attestationv1connect.AgentServiceName)
	reflector := grpcreflect.NewStaticReflector(all...)
	procedures(grpcreflect.NewHandlerV1(reflector, operator))
	procedures(grpcreflect.NewHandlerV1Alpha(reflector, operator))
	checker := grpchealth.NewStaticChecker(all...)
	procedures(grpchealth.NewHandler(checker, limits...))

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := o.Store.Ping(ctx); err != nil {
			http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if o.Ready != nil {
			if err := o.Ready(ctx); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
		if o.Notes != nil {
			for _, n := range o.Notes() {
				fmt.Fprintln(w, n)
			}
		}
	})
	var metrics http.Handler = promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry})
	if o.MetricsAuth {
		metrics = auth.Middleware(o.Auth, func(*http.Request) auth.Role { return auth.Viewer }, metrics)
	}
	mux.Handle("GET /metrics", metrics)
	return audit.RequestIDs(RouteErrors(mux)), mux, nil
}

// handleProcedures registers h, a Connect handler serving the service at
// path (/package.Service/), for each of the service's procedures rather
// than for the whole prefix, so that an unknown procedure is the mux's
// 404 like any unknown path. A procedure in special (by path) is served by
// its handler there instead. A service whose descriptor is not linked in
// (gRPC reflection v1alpha) keeps its prefix.
func handleProcedures(mux *http.ServeMux, path string, h http.Handler, special map[string]http.Handler) {
	d, _ := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(strings.Trim(path, "/")))
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		mux.Handle(path, h)
		return
	}
	for i := range sd.Methods().Len() {
		procedure := path + string(sd.Methods().Get(i).Name())
		if sh, ok := special[procedure]; ok {
			mux.Handle(procedure, sh)
		} else {
			mux.Handle(procedure, h)
		}
	}
}

// RouteErrors serves mux, answering a request that matches none of its
// patterns in the REST API's error shape rather than net/http's plain
// text: 404, or 405 with Allow when the path is served for other methods.
// The daemon's mux is served through it, and so is each extension's.
func RouteErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// The mux's own answer says whether other methods are served.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		var allow []string
		if rec.status == http.StatusMethodNotAllowed {
			allow = splitAllow(rec.header.Get("Allow"))
		}
		writeNoRoute(w, r, allow)
	})
}

// writeNoRoute answers a request for which no route is registered: 404
// when allow is empty, else 405 naming the methods in allow. The code is
// unimplemented either way, as gRPC and Connect answer an unknown
// procedure, so that a client can tell a route the daemon does not have
// (an extension it is built without) from a resource that does not exist
// (not_found).
func writeNoRoute(w http.ResponseWriter, r *http.Request, allow []string) {
	// Name the path the caller sent, not what a StripPrefix (in front of
	// an extension's routes) left of it.
	path := r.URL.Path
	if u, err := url.ParseRequestURI(r.RequestURI); err == nil && u.Path != "" {
		path = u.Path
	}
	if len(allow) == 0 {
		writeRESTError(w, http.StatusNotFound, connect.CodeUnimplemented, fmt.Sprintf("no route for %s %s", r.Method, path))
		return
	}
	slices.Sort(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeRESTError(w, http.StatusMethodNotAllowed, connect.CodeUnimplemented,
		fmt.Sprintf("method %s is not allowed on %s; allowed: %s", r.Method, path, strings.Join(allow, ", ")))
}

// splitAllow returns the methods of an Allow header, which net/http
// separates with ", " and the transcoder with ",".
func splitAllow(h string) []string {
	return strings.FieldsFunc(h, func(r rune) bool { return r == ',' || r == ' ' })
}

// statusRecorder keeps the status and header a handler writes and drops
// its body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// restCodec is the JSON of the REST API: snake_case names as in the
// proto, every field present, and unknown fields rejected (a typo in a
// field name is an error, not a silently ignored setting).
func restCodec(res vanguard.TypeResolver) vanguard.Codec {
	return restJSON{vanguard.JSONCodec{
		MarshalOptions:   protojson.MarshalOptions{Resolver: res, UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res},
	}}
}

// restJSON reports a body that does not decode as the caller's mistake
// (InvalidArgument, HTTP 400), not as an unknown server error.
type restJSON struct{ vanguard.JSONCodec }

func (c restJSON) Unmarshal(b []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(b, msg); err != nil {
		name := msg.ProtoReflect().Descriptor().Name()
		if field := c.badField(b, msg); field != "" {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body is not valid JSON for %s: field %q: %w", name, field, err))
		}
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body is not valid JSON for %s: %w", name, err))
	}
	return nil
}

// badField names the member of a JSON object body that does not decode
// into msg, so that the error says which field to fix even when protojson's
// does not (a syntax error inside a value names only a position). It
// returns "" when b is not an object or no single member is at fault.
func (c restJSON) badField(b []byte, msg proto.Message) string {
	var members map[string]json.RawMessage
	if json.Unmarshal(b, &members) != nil {
		return ""
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		one, err := json.Marshal(map[string]json.RawMessage{name: members[name]})
		if err != nil {
			continue
		}
		if c.JSONCodec.Unmarshal(one, msg.ProtoReflect().New().Interface()) != nil {
			return name
		}
	}
	return ""
}

func (c restJSON) UnmarshalField(b []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(b, msg, field); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("field %s: %w", field.Name(), err))
	}
	return nil
}

// internalMessage is all a caller learns of an internal error.
const internalMessage = "internal error; see the daemon's log"

// errorLogger logs internal errors once, at the edge, and hides their
// details from callers, for unary calls and streams alike.
func errorLogger(log *slog.Logger) connect.Interceptor { return &errorHider{log: log} }

type errorHider struct{ log *slog.Logger }

func (h *errorHider) hide(ctx context.Context, procedure string, err error) error {
	if code := connect.CodeOf(err); err == nil || (code != connect.CodeInternal && code != connect.CodeUnknown) {
		return err
	}
	if ctx.Err() != nil {
		return err // the caller hung up: nobody to tell, nothing went wrong here
	}
	h.log.Error("request failed", "procedure", procedure, "request_id", audit.RequestID(ctx), "err", err)
	return connect.NewError(connect.CodeInternal, errors.New(internalMessage))
}

func (h *errorHider) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		resp, err := next(ctx, req)
		if err != nil {
			return nil, h.hide(ctx, req.Spec().Procedure, err)
		}
		return resp, nil
	}
}

func (h *errorHider) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (h *errorHider) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return h.hide(ctx, conn.Spec().Procedure, next(ctx, conn))
	}
}

// restErrors makes REST errors follow HTTP conventions where the usual
// gRPC-to-HTTP mapping does not: an illegal state transition
// (failed_precondition, 400 by default) becomes 409 Conflict, a body
// that decompresses past the limit (resource_exhausted, 429) 413.
//
// A body that contradicts the path (PUT /api/v1/configs/worker with
// {"role": "other"}) is refused: 400, nothing changes.
//
// A path no REST route has, or a method the path is not served with, is
// the same JSON error as anywhere else on the daemon (the transcoder would
// answer them in plain text).
//
// It also reads a body sent without a JSON content type (curl -d sends
// application/x-www-form-urlencoded) as JSON, since JSON is all REST takes,
// and rejects a path or query that is not UTF-8, which could not become
// the request message's string fields.
func restErrors(next http.Handler, rules []pathRule) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkUTF8(r.URL); err != nil {
			writeRESTError(w, http.StatusBadRequest, connect.CodeInvalidArgument, err.Error())
			return
		}
		if msg := contradiction(rules, r); msg != "" {
			writeRESTError(w, http.StatusBadRequest, connect.CodeInvalidArgument, msg)
			return
		}
		if ct := r.Header.Get("Content-Type"); r.Body != nil && r.Method != http.MethodGet &&
			(ct == "" || strings.HasPrefix(ct, "application/x-www-form-urlencoded")) {
			r.Header.Set("Content-Type", "application/json")
		}
		rw := &restWriter{ResponseWriter: w, r: r}
		next.ServeHTTP(rw, r)
		rw.flushHeld()
	})
}

// checkUTF8 fails when the decoded path or a query parameter is not UTF-8.
func checkUTF8(u *url.URL) error {
	if !utf8.ValidString(u.Path) {
		return errors.New("the URL path is not valid UTF-8")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil // the transcoder reports a malformed query
	}
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return errors.New("a query parameter name is not valid UTF-8")
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return fmt.Errorf("query parameter %q is not valid UTF-8", k)
			}
		}
	}
	return nil
}

// writeRESTError writes an error in the REST API's format, the JSON of a
// google.rpc.Status.
func writeRESTError(w http.ResponseWriter, status int, code connect.Code, msg string) {
	auth.WriteJSONError(w, status, int(code), msg)
}

type restWriter struct {
	http.ResponseWriter
	r      *http.Request
	status int
	buf    *bytes.Buffer
}

// heldStatuses are the statuses whose bodies restWriter holds to look at.
var heldStatuses = map[int]bool{
	http.StatusBadRequest: true, http.StatusNotFound: true, http.StatusMethodNotAllowed: true,
	http.StatusTooManyRequests: true, http.StatusInternalServerError: true,
}

func (w *restWriter) WriteHeader(code int) {
	if heldStatuses[code] && w.buf == nil && w.status == 0 {
		// Hold the error body to look at its code.
		w.status, w.buf = code, &bytes.Buffer{}
		return
	}
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *restWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.buf != nil {
		n, _ := w.buf.Write(b)
		if w.buf.Len() > 64<<10 {
			w.flushHeld()
		}
		return n, nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *restWriter) flushHeld() {
	if w.buf == nil {
		return
	}
	status, out := w.status, w.buf.Bytes()
	var body map[string]any
	isJSON := json.Unmarshal(out, &body) == nil
	if !isJSON && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) {
		// The transcoder's own plain-text answer: no such route.
		w.buf = nil
		var allow []string
		if status == http.StatusMethodNotAllowed {
			allow = splitAllow(w.Header().Get("Allow"))
		}
		w.Header().Del("Content-Length")
		writeNoRoute(w.ResponseWriter, w.r, allow)
		return
	}
	if isJSON {
		// vanguard labels some errors with the target codec's content
		// type (application/proto) or none at all; the body is JSON.
		w.ResponseWriter.Header().Set("Content-Type", "application/json")
		code, _ := body["code"].(float64)
		msg, _ := body["message"].(string)
		switch {
		case connect.Code(code) == connect.CodeFailedPrecondition:
			status = http.StatusConflict
		case connect.Code(code) == connect.CodeResourceExhausted && strings.HasPrefix(msg, TooLarge):
			// A compressed body over the limit once decompressed.
			status = http.StatusRequestEntityTooLarge
		case (connect.Code(code) == connect.CodeInternal || connect.Code(code) == connect.CodeUnknown) && msg != internalMessage:
			// Not from a handler (errorLogger rewrites those): the
			// transcoder could not make a request message of what was
			// sent (an unknown query parameter, a body on a GET, ...).
			if strings.HasPrefix(msg, "unknown field in field path") {
				msg = "unknown query parameter: " + msg
			}
			status, body["code"], body["message"] = http.StatusBadRequest, int(connect.CodeInvalidArgument), msg
			if b, err := json.Marshal(body); err == nil {
				out = b
			}
		}
	}
	w.ResponseWriter.Header().Del("Content-Length")
	w.ResponseWriter.WriteHeader(status)
	w.ResponseWriter.Write(out)
	w.buf = nil
}

func (w *restWriter) Flush() {
	w.flushHeld()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *restWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
