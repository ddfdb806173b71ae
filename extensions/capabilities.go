package extensions

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/events"
)

// Host is what the daemon gives an extension: no globals, only these.
type Host struct {
	// Name is the extension's name.
	Name string
	// Logger is tagged with extension=<name>.
	Logger *slog.Logger
	// DB is the daemon's database. An extension keeps its data in its own
	// tables (extension_<name>_*), created by its migrations. It is the one
	// write connection: keep transactions short, never across network I/O.
	DB *sql.DB
	// ReadDB is a read-only pool on the same database, for queries that
	// should not queue behind writes.
	ReadDB *sql.DB
	// Metrics registers the extension's Prometheus collectors, served on
	// the daemon's /metrics with the label extension=<name>.
	Metrics prometheus.Registerer
	// BaseURL is the daemon's API base URL, like http://10.0.0.1:9000.
	BaseURL string
	// MaxRequestBytes is the daemon's max_request_bytes: no request body
	// reaches the extension's routes past it (the daemon answers 413 before
	// they run). An extension that serves Connect handlers passes
	// connect.WithReadMaxBytes(int(MaxRequestBytes)) to them too, so that
	// a compressed message is held to it once decompressed.
	MaxRequestBytes int64
	// Config is the extension's section of the daemon's config file
	// (extensions: <name>: ...) as JSON; nil when there is none. Decode it
	// strictly and return an error from Provision when it is wrong.
	Config json.RawMessage
}

// Provisioner is given the host before anything else happens to the
// extension. Keep what it needs; do no long work here.
type Provisioner interface {
	Provision(ctx context.Context, host *Host) error
}

// Migrator owns tables. Migrations returns a file system whose root holds
// NNNN_name.sql files (0001_create_tags.sql, ...), applied in order on the
// extension's own track. Every table, index, view and trigger they create
// must be named extension_<name>_*: checked before they run, and an
// extension that breaks the rule is not loaded.
//
// Those files are SQLite's. To run on PostgreSQL too (attestationd
// --database postgres://...), the file system also holds a directory
// postgres with the same versions and names in PostgreSQL's SQL
// (postgres/0001_create_tags.sql, ...); on PostgreSQL an extension
// without it is not loaded. The host's handles take ? placeholders on
// both engines.
type Migrator interface {
	Migrations() fs.FS
}

// Router serves HTTP (or Connect) handlers. The patterns it registers on
// mux are relative to the extension's prefix: "GET /machines/{id}/tags" is
// served as GET /api/v1/<name>/machines/{id}/tags, behind the daemon's
// operator authentication (Caller names who is calling) and its request
// body limit (Host.MaxRequestBytes). Each handler declares the role its
// callers need by being wrapped in Require; one that is not needs Admin.
type Router interface {
	Routes(mux *http.ServeMux)
}

// Role is what an operator may do: Viewer reads, Operator also changes
// machines, Admin may do everything.
type Role = auth.Role

// The roles, weakest first; each holds what those before it do.
const (
	Viewer   = auth.Viewer
	Operator = auth.Operator
	Admin    = auth.Admin
)

// Require declares that callers of h need role: the daemon answers
// others 403, naming the role, before h runs.
//
//	mux.Handle("GET /targets", extensions.Require(extensions.Viewer, http.HandlerFunc(a.targets)))
func Require(role Role, h http.Handler) http.Handler { return roleHandler{role, h} }

// RequiredRole is the role a handler a Router registered needs: what
// Require declared, else Admin.
func RequiredRole(h http.Handler) Role {
	if r, ok := h.(roleHandler); ok {
		return r.role
	}
	return Admin
}

type roleHandler struct {
	role Role
	h    http.Handler
}

func (r roleHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.h.ServeHTTP(w, req) }

// Starter is started after its migrations ran and its routes and event
// handlers are in place. Start must return promptly (start goroutines for
// long work) and be idempotent: the host may call it twice.
type Starter interface {
	Start(ctx context.Context) error
}

// Stopper is stopped at shutdown, extensions in reverse order. Stop must
// be idempotent: the host may call it twice, or without a Start.
type Stopper interface {
	Stop(ctx context.Context) error
}

// EventHandler subscribes to lifecycle events. Handlers ride the event
// outbox: every call is at least once, in order per machine, under its own
// timeout (10 s by default), isolated from every other handler.
type EventHandler interface {
	HandleEvents(h *Handlers)
}

// Commander adds command groups to the attestation CLI. A Commander that
// fails (or panics) is reported on stderr and the rest of the CLI works.
type Commander interface {
	Commands(cli CLI) ([]*cobra.Command, error)
}

// MachineSelector adds flags to `attestation machines list` that narrow
// the list by what the extension knows of machines (the tags extension's
// --tag rack=r12). The CLI lists the machines, asks each given flag's
// Select for the IDs it matches, and keeps the machines every one matched.
type MachineSelector interface {
	MachineSelectors(cli CLI) []Selector
}

// Selector is one repeatable string flag of `attestation machines list`.
type Selector struct {
	// Flag is the flag's name, like "tag"; a name the command has already
	// is reported and left out.
	Flag string
	// Usage is the flag's help text.
	Usage string
	// Select returns the IDs of the machines that match every value given
	// (all of the flag's values at once, so one request can answer them).
	Select func(ctx context.Context, values []string) ([]string, error)
}

// CLI is what an extension's commands get from the attestation CLI. Its
// values are settled when a command runs (after flags are parsed), so read
// them in RunE, not when building the commands.
type CLI interface {
	// BaseURL is the daemon's API base URL (--url, ATTESTATION_API_URL).
	BaseURL() string
	// Token returns the bearer token: --token, ATTESTATION_TOKEN, or the
	// login cache. When there is none, the command ends with a message
	// telling the user how to log in, and a non-zero exit.
	Token() string
	// HTTPClient sends requests with the bearer token set.
	HTTPClient() *http.Client
	// Output is table, json or yaml (-o).
	Output() string
	// Print writes data (a proto message, a slice of them, or anything
	// encoding/json takes) as json or yaml, or calls table for table output.
	Print(data any, table func(w io.Writer) error) error
	Stdout() io.Writer
	Stderr() io.Writer
}

// Caller names who made an operator request (the subject of the bearer
// token), for handlers mounted by a Router; "" outside one.
func Caller(ctx context.Context) string {
	if p, ok := auth.PrincipalFrom(ctx); ok {
		return p.Subject
	}
	return ""
}

// CallerName is what people call the caller (the token's
// preferred_username, name or email), for handlers mounted by a Router;
// "" outside one.
func CallerName(ctx context.Context) string {
	if p, ok := auth.PrincipalFrom(ctx); ok {
		return p.Name
	}
	return ""
}

// Handlers collects an extension's event subscriptions.
type Handlers struct {
	name       string
	subs       []events.Subscription
	configURLs bool
}

// NewHandlers returns an empty collection for the extension name; the host
// uses it, and so can an extension's unit tests.
func NewHandlers(name string) *Handlers { return &Handlers{name: name} }

// Subscriptions returns what was subscribed, named <extension>.<what> so
// that each keeps its own delivery cursor across restarts.
func (h *Handlers) Subscriptions() []events.Subscription {
	subs := make([]events.Subscription, len(h.subs))
	for i, s := range h.subs {
		s.ConfigURLs = h.configURLs
		subs[i] = s
	}
	return subs
}

// WithConfigURLs asks that node.provisioned reach this extension's
// handlers with the machine's one-time config URL (Provisioned.ConfigURL,
// config_url in the raw payload). The URL is a bearer secret: whoever
// fetches it first gets the machine's config and the machine does not, so
// ask only to hand it to the machine's own provisioning, and never log it.
// Without this, node.provisioned carries only ConfigTokenID.
func (h *Handlers) WithConfigURLs() { h.configURLs = true }

func (h *Handlers) add(what string, types []events.Type, fn events.Handler) {
	name := h.name + "." + what
	for i, n := 2, name; ; i++ {
		taken := false
		for _, s := range h.subs {
			taken = taken || s.Name == n
		}
		if !taken {
			name = n
			break
		}
		n = name + "." + itoa(i)
	}
	h.subs = append(h.subs, events.Subscription{Name: name, Types: types, Handle: fn})
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// on registers a typed handler for the event type whose payload is T.
func on[T any, P interface {
	*T
	events.Event
}](h *Handlers, fn func(context.Context, T) error) {
	s := events.On[T, P]("", fn)
	h.add(string(s.Types[0]), s.Types, s.Handle)
}

// OnRegistered handles node.registered.
func (h *Handlers) OnRegistered(fn func(context.Context, events.Registered) error) { on(h, fn) }

// OnOnline handles node.online.
func (h *Handlers) OnOnline(fn func(context.Context, events.Online) error) { on(h, fn) }

// OnProvisioned handles node.provisioned.
func (h *Handlers) OnProvisioned(fn func(context.Context, events.Provisioned) error) { on(h, fn) }

// OnConfigured handles node.configured.
func (h *Handlers) OnConfigured(fn func(context.Context, events.Configured) error) { on(h, fn) }

// OnImageCreated handles node.image_created.
func (h *Handlers) OnImageCreated(fn func(context.Context, events.ImageCreated) error) { on(h, fn) }

// OnDecommissioned handles node.decommissioned.
func (h *Handlers) OnDecommissioned(fn func(context.Context, events.Decommissioned) error) { on(h, fn) }

// OnHeartbeatMissed handles node.heartbeat_missed.
func (h *Handlers) OnHeartbeatMissed(fn func(context.Context, events.HeartbeatMissed) error) {
	on(h, fn)
}

// OnRoleChanged handles node.role_changed.
func (h *Handlers) OnRoleChanged(fn func(context.Context, events.RoleChanged) error) { on(h, fn) }

// OnCertRenewed handles node.cert_renewed.
func (h *Handlers) OnCertRenewed(fn func(context.Context, events.CertRenewed) error) { on(h, fn) }

// OnAny handles every event, typed: switch on its concrete type
// (*events.Registered, *events.Online, ...).
func (h *Handlers) OnAny(fn func(context.Context, events.Event) error) {
	h.add("any", nil, func(ctx context.Context, env events.Envelope) error {
		ev, err := env.Decode()
		if err != nil {
			return err
		}
		return fn(ctx, ev)
	})
}

// Subscribe handles several event types (none: all) in one subscription,
// raw: the envelope with the stored JSON payload. name tells this
// subscription from the extension's others and must stay the same across
// releases, since it keys the delivery cursor.
func (h *Handlers) Subscribe(name string, types []events.Type, fn func(context.Context, events.Envelope) error) {
	h.add("raw."+name, types, fn)
}
