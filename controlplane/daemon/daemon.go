// Package daemon assembles attestationd: it opens the store, sets up the
// operator auth, the event dispatcher and the API, and runs them until the
// context ends, shutting down in reverse order.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/extensions"
)

// Files in the data directory.
const (
	DatabaseFile   = "attestation.db"
	AdminTokenFile = "admin-token"
)

// Options add to what the config says; tests and embedders use them.
type Options struct {
	Logger *slog.Logger
	// Subscriptions are added to the event dispatcher.
	Subscriptions []events.Subscription
	// Listening is called with the API's address once it accepts connections.
	Listening func(addr net.Addr)
	// Extensions, when non-nil, are exactly the extensions to run (an
	// empty slice: none); nil runs every registered extension.
	Extensions []extensions.Extension
}

// Run runs the daemon until ctx is done, then shuts down and returns nil;
// it returns an error when it cannot start or a server fails.
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	dbPath := filepath.Join(dataDir, DatabaseFile)
	st, err := store.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	defer st.Close()
	version, _ := st.SchemaVersion(ctx, store.CoreTrack)
	log.Info("database ready", "data_dir", dataDir, "database", dbPath, "schema_version", version)

	authn, err := operatorAuth(cfg, dataDir, log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	dispatcher := events.NewDispatcher(st, events.Options{
		Timeout:    time.Duration(cfg.EventHandlerTimeout),
		Logger:     log.With("component", "events"),
		Registerer: reg,
	})
	for _, s := range opts.Subscriptions {
		if err := dispatcher.Subscribe(s); err != nil {
			return err
		}
	}

	// Listen before loading extensions, so they know the API's address.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	exts := opts.Extensions
	if exts == nil {
		exts = extensions.All()
	}
	host := &host{log: log.With("component", "extensions")}
	host.load(ctx, exts, st, baseURL(ln.Addr()), cfg.Extensions, dispatcher, reg)
	for name := range cfg.Extensions {
		if !host.has(name) {
			log.Warn("the config file has settings for an extension that is not compiled in", "extension", name)
		}
	}
	// Stopped last, after the API and the dispatcher: in reverse order.
	defer host.stop(10 * time.Second)
	// Before the API commits anything, so a new subscriber misses nothing.
	if err := dispatcher.Prepare(ctx); err != nil {
		return err
	}
	committed := &events.Signal{}
	svc := machines.New(st, func(evs []events.Envelope) {
		if len(evs) > 0 {
			dispatcher.Notify()
			committed.Notify()
		}
	})

	stopping := make(chan struct{})
	handler, mux, err := api.Handler(api.Options{
		Store:      st,
		Machines:   svc,
		Committed:  committed,
		Stopping:   stopping,
		Auth:       authn,
		Extensions: host.list,
		Registry:   reg,
		Logger:     log.With("component", "api"),
	})
	if err != nil {
		return err
	}
	host.mount(mux, authn)
	host.start(ctx)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
	}
	// gRPC needs HTTP/2; without TLS that is h2c (prior knowledge).
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.RegisterOnShutdown(func() { close(stopping) })

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dispatcher.Run(gctx) })
	g.Go(func() error {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve API: %w", err)
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	})
	log.Info("listening", "addr", ln.Addr().String(), "api", "http://"+ln.Addr().String()+"/api/v1/machines")
	if opts.Listening != nil {
		opts.Listening(ln.Addr())
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

// baseURL is the API's URL as the daemon itself reaches it.
func baseURL(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// operatorAuth returns the static-token authenticator: the configured
// token, or the one in the data directory (generated on first start).
func operatorAuth(cfg config.Config, dataDir string, log *slog.Logger) (auth.Authenticator, error) {
	if cfg.AdminToken != "" {
		log.Info("admin token set by configuration")
		return auth.NewStaticToken(cfg.AdminToken, "admin-token"), nil
	}
	path := filepath.Join(dataDir, AdminTokenFile)
	tok, created, err := auth.LoadOrCreateToken(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("generated admin token", "file", path)
	} else {
		log.Info("admin token", "file", path)
	}
	return auth.NewStaticToken(tok, "admin-token"), nil
}
