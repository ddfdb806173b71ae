// Package auth authenticates operators. An Authenticator turns a request's
// headers into a Principal; the Connect interceptor applies it to every
// operator procedure and puts the Principal in the context. Static API
// tokens are built in; other schemes (OIDC) plug in as Authenticators.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"

	"connectrpc.com/connect"
)

// Role is what a principal may do.
type Role string

// The operator roles, weakest first.
const (
	Viewer   Role = "viewer"
	Operator Role = "operator"
	Admin    Role = "admin"
)

// Principal is an authenticated caller.
type Principal struct {
	// Subject identifies the caller: the token's "sub", or "admin-token".
	Subject string
	// Name is what people call the caller (preferred_username, name or
	// email; the Subject when the token has none of them).
	Name  string
	Roles []Role
}

// Roles lists the roles weakest first: each holds what those before it do.
var Roles = []Role{Viewer, Operator, Admin}

// rank orders the roles; 0 is no role.
func (r Role) rank() int { return slices.Index(Roles, r) + 1 }

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.rank() > 0 {
		return r, nil
	}
	return "", fmt.Errorf("%q is not a role: want viewer, operator or admin", s)
}

// Has reports whether the principal holds role r or a stronger one.
func (p *Principal) Has(r Role) bool {
	for _, have := range p.Roles {
		if have.rank() >= r.rank() {
			return true
		}
	}
	return false
}

// require returns nil when p holds role, else an error that names what
// needs it, the role and what p holds (permission_denied at the edge).
func require(p *Principal, role Role, what string) error {
	if p != nil && p.Has(role) {
		return nil
	}
	held := "no role"
	if p != nil && len(p.Roles) > 0 {
		names := make([]string, len(p.Roles))
		for i, r := range p.Roles {
			names[i] = string(r)
		}
		held = "only " + strings.Join(names, ", ")
	}
	who := "the caller"
	if p != nil {
		who = p.Name
		if p.Subject != p.Name {
			who = fmt.Sprintf("%s (subject %s)", p.Name, p.Subject)
		}
	}
	return fmt.Errorf("%s needs the %s role; %s has %s", what, role, who, held)
}

// ErrNoCredentials: the request carried no bearer token.
var ErrNoCredentials = errors.New("no bearer token: pass one in the Authorization header (\"Authorization: Bearer TOKEN\")")

// ErrBadCredentials: the token was not accepted.
var ErrBadCredentials = errors.New("invalid bearer token")

// UnavailableError says credentials could not be checked because what
// checks them (an OIDC issuer) cannot be reached: unavailable, not
// unauthenticated, so that callers retry rather than log in again.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// codeOf is the Connect code of an Authenticate error.
func codeOf(err error) connect.Code {
	var u *UnavailableError
	if errors.As(err, &u) {
		return connect.CodeUnavailable
	}
	return connect.CodeUnauthenticated
}

// Authenticator checks a request's credentials.
type Authenticator interface {
	// Authenticate returns the caller, ErrNoCredentials when the headers
	// carry none, or another error when they are not accepted.
	Authenticate(ctx context.Context, h http.Header) (*Principal, error)
}

// BearerToken returns the token of an "Authorization: Bearer" header.
func BearerToken(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// StaticToken accepts one fixed token as an admin.
type StaticToken struct {
	sum     [32]byte
	subject string
}

// NewStaticToken returns an Authenticator for token, naming its holder subject.
func NewStaticToken(token, subject string) *StaticToken {
	return &StaticToken{sum: sha256.Sum256([]byte(token)), subject: subject}
}

// Authenticate implements Authenticator, comparing in constant time.
func (s *StaticToken) Authenticate(_ context.Context, h http.Header) (*Principal, error) {
	tok, ok := BearerToken(h)
	if !ok {
		return nil, ErrNoCredentials
	}
	got := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(got[:], s.sum[:]) != 1 {
		return nil, ErrBadCredentials
	}
	return &Principal{Subject: s.subject, Name: s.subject, Roles: []Role{Admin}}, nil
}

// Chain tries authenticators in order; the first that recognises the
// credentials decides.
type Chain []Authenticator

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, h http.Header) (*Principal, error) {
	err := ErrNoCredentials
	for _, a := range c {
		p, aerr := a.Authenticate(ctx, h)
		if aerr == nil {
			return p, nil
		}
		if !errors.Is(aerr, ErrNoCredentials) {
			err = aerr
		}
	}
	return nil, err
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller of an authenticated request.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// NewInterceptor returns a Connect interceptor that authenticates every
// call with a, refuses callers without the role required(procedure)
// names, and puts the Principal in the handler's context.
func NewInterceptor(a Authenticator, required func(procedure string) Role) connect.Interceptor {
	return &interceptor{a: a, required: required}
}

type interceptor struct {
	a        Authenticator
	required func(procedure string) Role
}

func (i *interceptor) authenticate(ctx context.Context, procedure string, h http.Header) (context.Context, error) {
	p, err := i.a.Authenticate(ctx, h)
	if err != nil {
		return nil, connect.NewError(codeOf(err), err)
	}
	if err := require(p, i.required(procedure), procedureName(procedure)); err != nil {
		return nil, connect.NewError(connect.CodePermissionDenied, err)
	}
	return WithPrincipal(ctx, p), nil
}

// procedureName is the method of a procedure path (/pkg.Service/Method).
func procedureName(procedure string) string {
	return procedure[strings.LastIndex(procedure, "/")+1:]
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, err := i.authenticate(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// LoadOrCreateToken returns the token stored in path, creating the file
// with a new random token (mode 0600) when it does not exist. created says
// whether it did.
func LoadOrCreateToken(path string) (token string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		fi, serr := os.Stat(path)
		if serr == nil && fi.Mode().Perm()&0o077 != 0 {
			return "", false, fmt.Errorf("admin token file %s is readable by others (mode %o): chmod 600 it", path, fi.Mode().Perm())
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", false, fmt.Errorf("admin token file %s is empty: delete it to generate a new token", path)
		}
		return tok, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("read admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("generate admin token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("write admin token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write admin token: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write admin token: %w", err)
	}
	return tok, true, f.Close()
}

// Middleware authenticates plain HTTP handlers (extensions' routes) like
// the interceptor does Connect ones: 401 with a JSON error when the
// request carries no accepted token, 403 when the caller lacks the role
// required(r) names, else the Principal in the context.
func Middleware(a Authenticator, required func(r *http.Request) Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r.Context(), r.Header)
		if err != nil {
			code := codeOf(err)
			status := http.StatusServiceUnavailable
			if code == connect.CodeUnauthenticated {
				status = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", `Bearer realm="attestation"`)
			}
			WriteJSONError(w, status, int(code), err.Error())
			return
		}
		if err := require(p, required(r), r.Method+" "+r.URL.Path); err != nil {
			WriteJSONError(w, http.StatusForbidden, int(connect.CodePermissionDenied), err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// WriteJSONError writes an error in the REST API's shape, the JSON of a
// google.rpc.Status as the transcoder writes the core's errors:
// {"code": <Connect/gRPC code number>, "message": "...", "details": []}.
// Every JSON error the daemon writes itself goes through here.
func WriteJSONError(w http.ResponseWriter, status, code int, msg string) {
	b, _ := json.Marshal(jsonError{Code: code, Message: msg, Details: []any{}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// jsonError is a google.rpc.Status in JSON, its fields in the
// transcoder's order.
type jsonError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []any  `json:"details"`
}
