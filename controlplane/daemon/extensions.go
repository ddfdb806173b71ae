package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/extensions"
)

// reservedNames are path segments of the core REST API under /api/v1: an
// extension with one of these names would shadow core routes.
var reservedNames = map[string]bool{"machines": true, "events": true, "extensions": true, "register": true, "configs": true, "schematics": true, "audit": true}

// loaded is an extension as the host runs it.
type loaded struct {
	ext  extensions.Extension
	info extensions.Info
	log  *slog.Logger

	mu      sync.Mutex
	err     error // why it failed to load or start; nil when running
	started bool
	routes  http.Handler
	mux     *http.ServeMux
}

func (l *loaded) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

func (l *loaded) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// status is what ListExtensions reports.
func (l *loaded) status() string {
	if err := l.failed(); err != nil {
		return "failed: " + err.Error()
	}
	return "running"
}

// host loads, starts and stops the compiled-in extensions. A failing
// extension is reported and skipped; it never stops the daemon or another
// extension.
type host struct {
	log  *slog.Logger
	exts []*loaded
	// maxRequestBytes is told to extensions (Host.MaxRequestBytes).
	maxRequestBytes int64
	// origin names where a setting was set (config.Config.Origin), so
	// that an extension refusing its settings points at them.
	origin func(key string) string
	// store is where load found the database: the calls of the
	// extensions' routes are recorded in its audit trail.
	store *store.Store
}

// guard runs fn, turning a panic into an error.
func guard(what string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s panicked: %v\n%s", what, p, debug.Stack())
		}
	}()
	return fn()
}

// load provisions every extension, applies its migrations and collects
// its event subscriptions, in name order.
func (h *host) load(ctx context.Context, list []extensions.Extension, st *store.Store, baseURL string, settings map[string]json.RawMessage, dispatcher *events.Dispatcher, reg prometheus.Registerer) {
	h.store = st
	for _, e := range list {
		info := e.Info()
		l := &loaded{ext: e, info: info, log: h.log.With("extension", info.Name)}
		h.exts = append(h.exts, l)
		if err := h.loadOne(ctx, l, st, baseURL, settings[info.Name], dispatcher, reg); err != nil {
			l.fail(err)
			l.log.Error("extension failed to load", "err", err)
		}
	}
}

func (h *host) loadOne(ctx context.Context, l *loaded, st *store.Store, baseURL string, settings json.RawMessage, dispatcher *events.Dispatcher, reg prometheus.Registerer) error {
	name := l.info.Name
	if reservedNames[name] {
		return fmt.Errorf("the name %q is taken by the core API (/api/v1/%s)", name, name)
	}
	if settings != nil {
		if _, ok := l.ext.(extensions.Provisioner); !ok {
			return fmt.Errorf("the config file has settings for it (extensions: %s:), but it takes none", name)
		}
	}
	if p, ok := l.ext.(extensions.Provisioner); ok {
		hostInfo := &extensions.Host{
			Name: name, Logger: l.log, DB: st.DB(), ReadDB: st.ReadDB(), BaseURL: baseURL, Config: settings,
			MaxRequestBytes: h.maxRequestBytes,
			Metrics:         prometheus.WrapRegistererWith(prometheus.Labels{"extension": name}, reg),
		}
		if err := guard("Provision", func() error { return p.Provision(ctx, hostInfo) }); err != nil {
			// Settings read from a file: at its line.
			if key := "extensions." + name; settings != nil && h.origin != nil && h.origin(key) != key {
				return fmt.Errorf("provision: %s: %w", h.origin(key), err)
			}
			return fmt.Errorf("provision: %w", err)
		}
	}
	if m, ok := l.ext.(extensions.Migrator); ok {
		var fsys fs.FS
		if err := guard("Migrations", func() error { fsys = m.Migrations(); return nil }); err != nil {
			return err
		}
		if fsys == nil {
			return errors.New("migrations: Migrations returned nil")
		}
		migs, err := st.LoadTrack(fsys)
		if errors.Is(err, store.ErrNoPostgresMigrations) {
			return fmt.Errorf("migrations: extension %s has %w", name, err)
		}
		if err != nil {
			return fmt.Errorf("migrations: %w", err)
		}
		for _, mig := range migs {
			if err := extensions.CheckMigration(name, mig.SQL); err != nil {
				return fmt.Errorf("migration %04d_%s refused: %w", mig.Version, mig.Name, err)
			}
		}
		n, err := st.Migrate(ctx, "extension_"+name, migs)
		if err != nil {
			return fmt.Errorf("migrations: %w", err)
		}
		if n > 0 {
			l.log.Info("applied extension migrations", "count", n, "version", len(migs))
		}
	}
	if eh, ok := l.ext.(extensions.EventHandler); ok {
		handlers := extensions.NewHandlers(name)
		if err := guard("HandleEvents", func() error { eh.HandleEvents(handlers); return nil }); err != nil {
			return err
		}
		for _, s := range handlers.Subscriptions() {
			s.Handle = l.gate(s.Handle)
			if err := dispatcher.Subscribe(s); err != nil {
				return fmt.Errorf("event handlers: %w", err)
			}
		}
	}
	if r, ok := l.ext.(extensions.Router); ok {
		mux := http.NewServeMux()
		if err := guard("Routes", func() error { r.Routes(mux); return nil }); err != nil {
			return err
		}
		l.mux, l.routes = mux, api.RouteErrors(mux)
	}
	return nil
}

// gate keeps a failed extension's event handlers from running (their
// events are skipped, not queued: the extension is not working).
func (l *loaded) gate(next events.Handler) events.Handler {
	return func(ctx context.Context, ev events.Envelope) error {
		if l.failed() != nil {
			return nil
		}
		return next(ctx, ev)
	}
}

// mount serves each extension's routes under /api/v1/<name>/, behind the
// operator authentication, recording the calls of their mutating routes
// in the audit trail (api.AuditRoutes).
func (h *host) mount(mux *http.ServeMux, authn auth.Authenticator) {
	authn = api.RecordActors(authn)
	for _, l := range h.exts {
		_, isRouter := l.ext.(extensions.Router)
		if !isRouter || reservedNames[l.info.Name] {
			continue
		}
		// A router that failed to load still gets its prefix, to say so.
		routes := l.routes
		if routes == nil {
			routes = api.RouteErrors(http.NewServeMux())
		}
		prefix := "/api/v1/" + l.info.Name
		inner := http.StripPrefix(prefix, routes)
		mux.Handle(prefix+"/", api.AuditRoutes(h.store, l.info.Name, prefix, l.mux, l.log, auth.Middleware(authn, func(r *http.Request) auth.Role { return l.requiredRole(prefix, r) }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := l.failed(); err != nil {
				auth.WriteJSONError(w, http.StatusServiceUnavailable, 14, fmt.Sprintf("extension %s is not running: %v", l.info.Name, err))
				return
			}
			inner.ServeHTTP(w, r)
		}))))
	}
}

// requiredRole is the role the route r asks for needs, as the extension
// declared it (extensions.Require; Admin undeclared). A path no route
// serves needs Viewer, so that any operator learns it is not there.
func (l *loaded) requiredRole(prefix string, r *http.Request) auth.Role {
	if l.mux == nil {
		return auth.Viewer
	}
	h, pattern, _ := api.ExtensionRoute(l.mux, prefix, r)
	if pattern == "" {
		return auth.Viewer
	}
	return extensions.RequiredRole(h)
}

// start starts the extensions that loaded, in order.
func (h *host) start(ctx context.Context) {
	for _, l := range h.exts {
		if l.failed() != nil {
			continue
		}
		if s, ok := l.ext.(extensions.Starter); ok {
			if err := guard("Start", func() error { return s.Start(ctx) }); err != nil {
				l.fail(fmt.Errorf("start: %w", err))
				l.log.Error("extension failed to start", "err", err)
				continue
			}
		}
		l.mu.Lock()
		l.started = true
		l.mu.Unlock()
		l.log.Info(fmt.Sprintf("Loaded extension: %s v%s", l.info.Name, l.info.Version), "version", l.info.Version)
	}
}

// stop stops the started extensions in reverse order, each within timeout.
func (h *host) stop(timeout time.Duration) {
	for i := len(h.exts) - 1; i >= 0; i-- {
		l := h.exts[i]
		l.mu.Lock()
		started := l.started
		l.started = false
		l.mu.Unlock()
		s, ok := l.ext.(extensions.Stopper)
		if !started || !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		if err := guard("Stop", func() error { return s.Stop(ctx) }); err != nil {
			l.log.Error("extension failed to stop cleanly", "err", err)
		} else {
			l.log.Info("stopped extension")
		}
		cancel()
	}
}

// list reports every extension with its status, for ListExtensions.
func (h *host) list() []api.Extension {
	out := make([]api.Extension, 0, len(h.exts))
	for _, l := range h.exts {
		out = append(out, api.Extension{Name: l.info.Name, Version: l.info.Version, Description: l.info.Description, Status: l.status()})
	}
	return out
}

// has reports whether an extension of that name is loaded.
func (h *host) has(name string) bool {
	for _, l := range h.exts {
		if l.info.Name == name {
			return true
		}
	}
	return false
}
