package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/configs"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

var _ attestationv1connect.AuditServiceHandler = (*auditService)(nil)

type auditService struct {
	store *store.Store
}

func (s *auditService) ListAuditRecords(ctx context.Context, req *connect.Request[attestationv1.ListAuditRecordsRequest]) (*connect.Response[attestationv1.ListAuditRecordsResponse], error) {
	f := store.AuditFilter{
		MachineID: machines.NormalizeID(req.Msg.Machine),
		Actor:     req.Msg.Actor,
		Action:    req.Msg.Action,
		Limit:     int(req.Msg.PageSize),
	}
	if f.Limit == 0 {
		f.Limit = defaultPageSize
	}
	if req.Msg.Since != nil {
		if err := req.Msg.Since.CheckValid(); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("since: %w", err))
		}
		f.Since = req.Msg.Since.AsTime()
	}
	if req.Msg.PageToken != "" {
		var err error
		if f.AfterID, err = parseAuditPageToken(req.Msg.PageToken); err != nil {
			return nil, err
		}
	}
	limit := f.Limit
	f.Limit++ // one more tells whether there is a next page
	recs, err := s.store.ListAuditRecords(ctx, f)
	if err != nil {
		return nil, ToConnect(err)
	}
	resp := &attestationv1.ListAuditRecordsResponse{Records: []*attestationv1.AuditRecord{}}
	if len(recs) > limit {
		recs = recs[:limit]
		resp.NextPageToken = auditPageToken(recs[len(recs)-1].ID)
	}
	for _, r := range recs {
		resp.Records = append(resp.Records, auditRecordToProto(r))
	}
	return connect.NewResponse(resp), nil
}

func auditRecordToProto(r audit.Record) *attestationv1.AuditRecord {
	return &attestationv1.AuditRecord{
		Id:        r.ID,
		Time:      timestamppb.New(r.Time),
		Actor:     &attestationv1.Actor{Subject: r.Actor.Subject, Name: r.Actor.Name},
		Action:    r.Action,
		MachineId: r.MachineID,
		RequestId: r.RequestID,
		Result:    r.Result,
		Detail:    r.Detail,
	}
}

// auditPageToken encodes an audit list position: the last record's ID.
func auditPageToken(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("audit:" + strconv.FormatInt(id, 10)))
}

func parseAuditPageToken(tok string) (int64, error) {
	bad := connect.NewError(connect.CodeInvalidArgument, errors.New("page_token: not a token from a previous response"))
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, bad
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(string(raw), "audit:"), 10, 64)
	if !strings.HasPrefix(string(raw), "audit:") || err != nil || n < 0 {
		return 0, bad
	}
	return n, nil
}

// auditedProcedure is how a mutating operator procedure is recorded when
// it fails: its action, and the machine and detail its request names. Its
// handler records its success itself, in the transaction of the change.
type auditedProcedure struct {
	action string
	about  func(proto.Message) (machineID, detail string)
}

// auditedProcedures are the operator procedures that change something;
// the others only read, and are not recorded (a test proves every
// procedure is one or the other).
var auditedProcedures = map[string]auditedProcedure{
	attestationv1connect.MachineServiceRegisterMachineProcedure: {audit.MachineRegister, about(func(r *attestationv1.RegisterMachineRequest) (string, string) {
		return "", machines.RegistrationDetail(machines.Registration{EKFingerprint: r.EkFingerprint, Role: r.Role, Hostname: r.Hostname, SchematicID: r.SchematicId})
	})},
	attestationv1connect.MachineServiceApproveMachineProcedure: {audit.MachineApprove, about(func(r *attestationv1.ApproveMachineRequest) (string, string) {
		return r.Id, machines.ApprovalDetail(machines.Approval{Role: r.Role, Hostname: r.Hostname, SchematicID: r.SchematicId})
	})},
	attestationv1connect.MachineServiceRevokeMachineProcedure: {audit.MachineRevoke, about(func(r *attestationv1.RevokeMachineRequest) (string, string) {
		return r.Id, machines.RevocationDetail(r.Reason)
	})},
	attestationv1connect.MachineServiceSetMachineRoleProcedure: {audit.MachineSetRole, about(func(r *attestationv1.SetMachineRoleRequest) (string, string) {
		return r.Id, machines.RoleDetail(r.Role)
	})},
	attestationv1connect.MachineServiceReinstateMachineProcedure: {audit.MachineReinstate, about(func(r *attestationv1.ReinstateMachineRequest) (string, string) {
		return r.Id, ""
	})},
	attestationv1connect.ConfigServiceSetConfigProcedure: {audit.ConfigSet, about(func(r *attestationv1.SetConfigRequest) (string, string) {
		return "", configs.SetDetail(r.Role, r.SchematicId)
	})},
	attestationv1connect.ConfigServiceDeleteConfigProcedure: {audit.ConfigDelete, about(func(r *attestationv1.DeleteConfigRequest) (string, string) {
		return "", audit.Detail("role", r.Role)
	})},
	attestationv1connect.SchematicServiceCreateSchematicProcedure: {audit.SchematicCreate, about(func(*attestationv1.CreateSchematicRequest) (string, string) {
		return "", "" // its ID is known only once it parses
	})},
	attestationv1connect.SchematicServiceBuildImageProcedure: {audit.ImageBuild, about(func(r *attestationv1.BuildImageRequest) (string, string) {
		return "", audit.Detail("schematic", strings.ToLower(r.Id))
	})},
}

// about adapts a function of one request type to auditedProcedure.about.
func about[T proto.Message](fn func(T) (string, string)) func(proto.Message) (string, string) {
	return func(m proto.Message) (string, string) {
		r, ok := m.(T)
		if !ok {
			return "", ""
		}
		return fn(r)
	}
}

// Audited reports whether procedure is recorded in the audit trail.
func Audited(procedure string) bool {
	_, ok := auditedProcedures[procedure]
	return ok
}

// auditMachineID is the machine ID a request names, for its record: in
// lower case, and only when it is one (a refused request may name
// anything, which its result already quotes).
func auditMachineID(id string) string {
	if u, err := uuid.Parse(id); err == nil && len(id) == 36 {
		return u.String()
	}
	return ""
}

// auditResult is the result of an action that failed with err: its code
// and message, the message of an internal error hidden as callers see it.
func auditResult(err error) string {
	code := connect.CodeOf(err)
	if code == connect.CodeInternal || code == connect.CodeUnknown {
		return connect.CodeInternal.String() + ": " + internalMessage
	}
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	return code.String() + ": " + msg
}

// auditor records the refused and failed calls of the mutating operator
// procedures (their successes are recorded by their handlers). It runs
// outside the authentication, so that it sees a caller refused for lack
// of a role; the Authenticator, wrapped in RecordActors, names the actor.
// A call whose caller was not authenticated is not recorded: there is no
// one to name.
type auditor struct {
	store *store.Store
	log   *slog.Logger
}

func (a *auditor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p, ok := auditedProcedures[req.Spec().Procedure]
		if req.Spec().IsClient || !ok {
			return next(ctx, req)
		}
		resp, err := next(ctx, req)
		if err != nil {
			msg, _ := req.Any().(proto.Message)
			machineID, detail := p.about(msg)
			a.record(ctx, audit.Record{Action: p.action, MachineID: auditMachineID(machineID), Detail: detail, Result: auditResult(err)})
		}
		return resp, err
	}
}

func (a *auditor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler passes streams through: they only read.
func (a *auditor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// record writes rec in a transaction of its own, when the caller was
// authenticated; a caller that hung up does not stop it.
func (a *auditor) record(ctx context.Context, rec audit.Record) {
	if _, ok := audit.ActorFrom(ctx); !ok {
		return
	}
	if _, err := a.store.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		return tx.Audit(ctx, rec)
	}); err != nil {
		a.log.Error("audit record not written", "action", rec.Action, "result", rec.Result,
			"request_id", audit.RequestID(ctx), "err", err)
	}
}

// RecordActors returns a wrapped so that each caller it authenticates is
// also recorded as the actor of the request (audit.SetActor): the
// services read it from there, and the audit trail names who was refused
// for lack of a role.
func RecordActors(a auth.Authenticator) auth.Authenticator { return actorRecorder{a} }

type actorRecorder struct{ auth.Authenticator }

func (r actorRecorder) Authenticate(ctx context.Context, h http.Header) (*auth.Principal, error) {
	p, err := r.Authenticator.Authenticate(ctx, h)
	if err == nil && p != nil {
		audit.SetActor(ctx, audit.Actor{Subject: p.Subject, Name: p.Name})
	}
	return p, err
}

// AuditRoutes records in the audit trail each call of an extension's
// mutating routes (POST, PUT, PATCH, DELETE) that next (the extension's
// routes, behind the operator authentication) serves under prefix
// (/api/v1/<name>): action "<name> <METHOD> <pattern>" with the pattern
// the extension registered on mux, the machine its {machine_id} wildcard
// names, and the outcome (ok for a 1xx-3xx answer, else the JSON error's
// code and message). The extension's change commits in its own
// transaction, so the record is written just after it, in another.
// Requests for no route, and callers that were not authenticated, are not
// recorded.
func AuditRoutes(st *store.Store, name, prefix string, mux *http.ServeMux, log *slog.Logger, next http.Handler) http.Handler {
	a := &auditor{store: st, log: log}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mux == nil || !mutating(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		_, pattern, inner := ExtensionRoute(mux, prefix, r)
		if pattern == "" {
			next.ServeHTTP(w, r)
			return
		}
		rw := &outcomeWriter{ResponseWriter: w}
		next.ServeHTTP(rw, r)
		action := name + " " + pattern
		if !strings.HasPrefix(pattern, r.Method+" ") {
			action = name + " " + r.Method + " " + pattern
		}
		a.record(r.Context(), audit.Record{Action: action, MachineID: auditMachineID(wildcard(pattern, inner.URL.EscapedPath(), "machine_id")), Result: rw.result()})
	})
}

// ExtensionRoute returns the handler and pattern mux serves r with when
// mounted under prefix by http.StripPrefix (pattern "" when no route
// matches), and r as mux sees it. Path and RawPath are both trimmed, as
// StripPrefix does: a lookup on Path alone would miss a route whose
// wildcard holds an escaped slash ("a%2Fb") that mux still serves.
func ExtensionRoute(mux *http.ServeMux, prefix string, r *http.Request) (http.Handler, string, *http.Request) {
	u := *r.URL
	u.Path = strings.TrimPrefix(r.URL.Path, prefix)
	u.RawPath = strings.TrimPrefix(r.URL.RawPath, prefix)
	inner := new(http.Request)
	*inner = *r
	inner.URL = &u
	h, pattern := mux.Handler(inner)
	return h, pattern, inner
}

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// wildcard returns the value of the {name} wildcard of a ServeMux pattern
// ("POST /machines/{machine_id}/tags") in the escaped path it matched,
// or "" when it has none.
func wildcard(pattern, path, name string) string {
	if _, p, ok := strings.Cut(pattern, " "); ok {
		pattern = p
	}
	if i := strings.Index(pattern, "/"); i > 0 {
		pattern = pattern[i:] // a host
	}
	segs, have := strings.Split(pattern, "/"), strings.Split(path, "/")
	for i, s := range segs {
		if s == "{"+name+"}" && i < len(have) {
			v, err := url.PathUnescape(have[i])
			if err != nil {
				return ""
			}
			return v
		}
	}
	return ""
}

// maxErrorBody is how much of an error answer outcomeWriter keeps to
// read its code and message.
const maxErrorBody = 4 << 10

// outcomeWriter notes the status of an answer and keeps the start of an
// error's body.
type outcomeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *outcomeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *outcomeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 && w.body.Len() < maxErrorBody {
		w.body.Write(b[:min(len(b), maxErrorBody-w.body.Len())])
	}
	return w.ResponseWriter.Write(b)
}

func (w *outcomeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *outcomeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// result is the audit result of the answer: ok, or the code and message
// of its JSON error (auth.WriteJSONError's shape), or its status.
func (w *outcomeWriter) result() string {
	if w.status < 400 {
		return audit.ResultOK
	}
	var e struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(w.body.Bytes(), &e) == nil && e.Code != nil {
		return connect.Code(*e.Code).String() + ": " + e.Message
	}
	return fmt.Sprintf("http %d: %s", w.status, strings.TrimSpace(http.StatusText(w.status)))
}
