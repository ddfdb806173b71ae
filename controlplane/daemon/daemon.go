// Package daemon assembles attestationd: it opens the store, sets up the
// operator auth, the event dispatcher and the API, and runs them until the
// context ends, shutting down in reverse order.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/attestation/attestation/controlplane/agentapi"
	"github.com/attestation/attestation/controlplane/api"
	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/configs"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/listener"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/images/cache"
)

// Files in the data directory.
const (
	DatabaseFile   = "attestation.db"
	AdminTokenFile = "admin-token"
	// ConfigTokenKeyFile holds the key one-time config tokens are derived
	// with; the database keeps only their hashes.
	ConfigTokenKeyFile = "config-token-key"
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

// storeMetrics exports the store's group commits: how many, and how many
// updates they carried (their ratio is the batching under load).
func storeMetrics(st *store.Store) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "attestation_store_commits_total",
			Help: "Transactions the store committed for updates (group commits: on SQLite, one fsync of the WAL each).",
		}, func() float64 { c, _ := st.CommitStats(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "attestation_store_updates_total",
			Help: "Updates the store committed, all group commits together (divided by attestation_store_commits_total: updates per commit).",
		}, func() float64 { _, u := st.CommitStats(); return float64(u) }),
	}
}

// openStore opens the PostgreSQL database of dsn, or when it is empty the
// SQLite file in the data directory.
func openStore(ctx context.Context, dsn, dataDir string) (*store.Store, error) {
	if dsn == "" {
		return store.Open(ctx, filepath.Join(dataDir, DatabaseFile))
	}
	if !store.IsPostgresDSN(dsn) {
		return nil, fmt.Errorf("database %s: want a postgres:// or postgresql:// URL", store.RedactDSN(dsn))
	}
	return store.OpenPostgres(ctx, dsn)
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
	// Before anything is written: a daemon that cannot have its address
	// leaves no data directory or admin token behind.
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	// ca is the daemon's certificate authority: agents pin its
	// certificate; it verifies the client certificates the API's TLS
	// asks for (tlsConfig) and issues nodes' certificates.
	ca, err := loadCA(cfg, dataDir, log)
	if err != nil {
		return err
	}
	scheme := "http"
	if cfg.TLS() {
		scheme = "https"
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = defaultPublicURL(ln.Addr(), scheme)
	}
	publicURL = strings.TrimRight(publicURL, "/")
	// tlsConfig, nil when TLS is off, serves the API; a handler reads a
	// client's verified certificate in r.TLS.PeerCertificates.
	tlsConfig, certs, err := apiTLS(cfg, dataDir, ca, selfSignedHosts(ln.Addr(), publicURL), log)
	if err != nil {
		return err
	}
	if tlsConfig != nil {
		warnPlainPublicURL(publicURL, log)
	}
	st, err := openStore(ctx, cfg.Database, dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	version, _ := st.SchemaVersion(ctx, store.CoreTrack)
	// Path is PostgreSQL's URL without its password.
	log.Info("database ready", "engine", st.Engine(), "data_dir", dataDir, "database", st.Path(), "schema_version", version)
	// Before anything else is set up: one instance over the database
	// serves DHCP full mode.
	dhcpFull, err := dhcpFullLease(ctx, st, cfg)
	if err != nil {
		return err
	}
	if dhcpFull != nil {
		defer dhcpFull.Release()
	}

	authn, err := operatorAuth(ctx, cfg, dataDir, log)
	if err != nil {
		return err
	}
	policy, err := ekPolicy(cfg, log)
	if err != nil {
		return err
	}
	pcrPolicy, err := decodePCRPolicy(cfg.PCRPolicy)
	if err != nil {
		return err
	}
	tokenKeyPath := cfg.ConfigTokenKey
	if tokenKeyPath == "" {
		tokenKeyPath = filepath.Join(dataDir, ConfigTokenKeyFile)
	}
	tokenKey, err := configTokenKey(tokenKeyPath)
	if err != nil {
		return err
	}
	// Derived from the config token key, which the instances of one
	// control plane share: any of them answers another's challenges.
	challengeKey, err := agentapi.DeriveChallengeKey(tokenKey)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(storeMetrics(st)...)
	// svc, made below once the listener says the public URL, derives
	// config URLs for the subscriptions that ask for them.
	var svc *machines.Service
	dispatcher := events.NewDispatcher(st, events.Options{
		Timeout:    time.Duration(cfg.EventHandlerTimeout),
		Logger:     log.With("component", "events"),
		Registerer: reg,
		ConfigURL:  func(tokenID string) string { return svc.ConfigURLOfToken(tokenID) },
	})
	for _, s := range opts.Subscriptions {
		if err := dispatcher.Subscribe(s); err != nil {
			return err
		}
	}
	// imgs, made below once the listener says the public URL, builds
	// an approved machine's image before it asks for it.
	var imgs *cache.Cache
	if err := dispatcher.Subscribe(buildOnApproval(func() *cache.Cache { return imgs }, log.With("component", "images"))); err != nil {
		return err
	}

	exts := opts.Extensions
	if exts == nil {
		exts = extensions.All()
	}
	host := &host{log: log.With("component", "extensions"), maxRequestBytes: cfg.MaxRequestBytes, origin: cfg.Origin}
	host.load(ctx, exts, st, baseURL(ln.Addr(), tlsConfig != nil), cfg.Extensions, dispatcher, reg)
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
	imgs = images(cfg, dataDir, st, publicURL, func() *machines.Service { return svc }, log)
	svc = machines.New(st, func(evs []events.Envelope) {
		if len(evs) > 0 {
			dispatcher.Committed(evs)
			committed.Notify()
		}
	}, machines.WithConfigTokens(publicURL, time.Duration(cfg.ConfigTokenTTL), tokenKey), machines.WithISOURLs(imgs.ISOURL))
	cfgs := configs.NewService(st)

	stopping := make(chan struct{})
	agent, err := agentapi.New(agentapi.Options{
		Store:             st,
		Machines:          svc,
		Configs:           cfgs,
		Policy:            policy,
		AllowNoTPM:        cfg.AllowNoTPM,
		PCRPolicy:         pcrPolicy,
		ChallengeTTL:      time.Duration(cfg.ChallengeTTL),
		SessionTTL:        time.Duration(cfg.SessionTTL),
		HeartbeatInterval: time.Duration(cfg.HeartbeatInterval),
		Committed:         committed,
		Stopping:          stopping,
		CA:                ca,
		NodeCertLifetime:  time.Duration(cfg.NodeCertLifetime),
		ChallengeKey:      challengeKey,
		Limits:            agentapi.Limits{RegisterRate: cfg.RegisterRate, RegisterBurst: cfg.RegisterBurst},
		Registerer:        reg,
		Logger:            log.With("component", "agent"),
	})
	if err != nil {
		return err
	}
	bootAssets, err := filepath.Abs(cfg.BootAssetsDir())
	if err != nil {
		return fmt.Errorf("boot assets directory: %w", err)
	}
	bootHTTP, err := httpBoot(cfg, bootAssets, bootResolver(cfg, st, publicURL, imgs), log, reg)
	if err != nil {
		return err
	}
	defer bootHTTP.Close()
	limits := api.NewLimits(cfg.MaxRequestBytes, reg, log.With("component", "api"))
	handler, mux, err := api.Handler(api.Options{
		Store:       st,
		Machines:    svc,
		Configs:     cfgs,
		Committed:   committed,
		Stopping:    stopping,
		Auth:        authn,
		Agent:       agent,
		Extensions:  host.list,
		Images:      imgs,
		Registry:    reg,
		MetricsAuth: cfg.MetricsAuth,
		Notes:       bootNotes(bootHTTP, bootAssets),
		Limits:      limits,
		Logger:      log.With("component", "api"),
	})
	if err != nil {
		return err
	}
	mux.Handle(agentapi.ConfigPath, agent.ConfigHandler())
	// Unauthenticated, in front of the mux, which would redirect a
	// non-canonical /boot/ or /images/ path rather than refuse it.
	handler = bootHTTP.Handler(serveImages(imgs, handler))
	// Outermost: no route, extensions' included, reads past the limit.
	handler = limits.Middleware(handler)
	host.mount(mux, authn)
	host.start(ctx)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// No ReadTimeout or WriteTimeout: they would cut the streams
		// (WatchApproval, WatchEvents) short. The body has its own
		// deadline (api.Limits), idle connections theirs.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:      new(http.Protocols),
	}
	// gRPC needs HTTP/2; without TLS that is h2c (prior knowledge),
	// which loopback clients may still use with TLS on.
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.RegisterOnShutdown(func() { close(stopping) })
	var apiLn net.Listener = ln
	if tlsConfig != nil {
		srv.Protocols.SetHTTP2(true)
		apiLn = listener.New(ln, tlsConfig, log.With("component", "api"))
	}

	tftpSrv, err := tftpServer(cfg, log, reg)
	if err != nil {
		return err
	}
	ra, err := routerAdvertisements(cfg, log, reg)
	if err != nil {
		return err
	}
	dhcpSrv, err := dhcpServer(cfg, st, bootResolver(cfg, st, publicURL, imgs), publicURL, ra, log, reg)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	if tftpSrv != nil {
		g.Go(func() error { return tftpSrv.Run(gctx) })
	}
	if dhcpSrv != nil {
		g.Go(func() error { return dhcpSrv.Run(gctx) })
	}
	if dhcpFull != nil {
		g.Go(func() error { return holdDHCPFull(gctx, dhcpFull) })
	}
	if ra != nil {
		g.Go(func() error { return ra.Run(gctx) })
	}
	// Done once by the instances over one database: by the one that leads
	// each lease. Events another instance commits do not wake this
	// dispatcher: it reads the outbox every Poll (a second) too.
	g.Go(func() error { return leading(gctx, st, leaseEvents, log, dispatcher.Run) })
	sweeper := &machines.Sweeper{
		Machines: svc,
		Interval: time.Duration(cfg.HeartbeatInterval),
		Logger:   log.With("component", "heartbeats"),
	}
	g.Go(func() error { return leading(gctx, st, leaseHeartbeats, log, sweeper.Run) })
	if certs != nil {
		g.Go(func() error { return certs.Run(gctx) })
	}
	g.Go(func() error {
		err := srv.Serve(apiLn)
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
	log.Info("listening", "addr", ln.Addr().String(), "api", scheme+"://"+ln.Addr().String()+"/api/v1/machines", "public_url", publicURL)
	if opts.Listening != nil {
		opts.Listening(ln.Addr())
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

// listen opens the API's listener, saying what to do when the address
// is taken or refused.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("listen on %s: %w: is another attestationd running? Stop it, or choose another address with --listen (ATTESTATION_LISTEN, listen in the config file)", addr, syscall.EADDRINUSE)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("listen on %s: %w: a port below 1024 needs root or CAP_NET_BIND_SERVICE; choose another address with --listen", addr, syscall.EACCES)
	case err != nil:
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// baseURL is the API's URL as the daemon itself reaches it: plain HTTP
// over loopback, which the API serves with TLS on too, or https when it
// listens on one address that is not loopback.
func baseURL(a net.Addr, tls bool) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		host, ip = "127.0.0.1", net.IPv4(127, 0, 0, 1)
	}
	scheme := "http"
	if tls && !ip.IsLoopback() {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// defaultPublicURL is the URL agents are told to fetch their config from
// when no public_url is set: scheme (http, or https with TLS on) and the
// listen address, or, when it is a wildcard, this host's first global
// unicast IPv4 address (then loopback).
func defaultPublicURL(a net.Addr, scheme string) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return scheme + "://" + a.String()
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return scheme + "://" + net.JoinHostPort(host, port)
	}
	host = "127.0.0.1"
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				host = n.IP.String()
				break
			}
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// configTokenKey reads the config token key, hex in a file, creating it
// on first start. Instances over one database share it as a file (as they
// share the CA's key), not through the database: the database keeps only
// the hashes of the tokens derived with it.
func configTokenKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) != machines.ConfigTokenKeySize {
			return nil, fmt.Errorf("config token key %s: want %d bytes in hex", path, machines.ConfigTokenKeySize)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read config token key: %w", err)
	}
	key := make([]byte, machines.ConfigTokenKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("make config token key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create config token key: %w", err)
	}
	_, err = fmt.Fprintln(f, hex.EncodeToString(key))
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return nil, fmt.Errorf("write config token key %s: %w", path, err)
	}
	return key, nil
}

// ekPolicy builds the EK policy from the config, loading the roots bundle.
func ekPolicy(cfg config.Config, log *slog.Logger) (attest.Policy, error) {
	mode, err := attest.ParseMode(cfg.EKPolicy)
	if err != nil {
		return attest.Policy{}, err
	}
	p := attest.Policy{Mode: mode, Allowlist: map[string]bool{}}
	for _, fp := range cfg.EKAllowlist {
		p.Allowlist[strings.ToLower(fp)] = true
	}
	if cfg.EKRoots != "" {
		if p.Roots, p.Intermediates, err = attest.LoadRoots(cfg.EKRoots); err != nil {
			return attest.Policy{}, err
		}
	}
	switch {
	case mode == attest.ModeVerify && cfg.EKRoots == "":
		log.Warn("EK policy is verify but no EK roots are configured: every TPM will be refused; set --ek-roots DIR (or --ek-policy allowlist|any)")
	case mode == attest.ModeAny:
		log.Warn("EK policy is any: every TPM may enroll; for development only")
	}
	if cfg.AllowNoTPM {
		log.Warn("machines without a TPM are accepted (allow_no_tpm): they prove nothing")
	}
	log.Info("EK policy", "mode", mode, "roots", cfg.EKRoots, "allowlisted", len(p.Allowlist))
	return p, nil
}

// decodePCRPolicy decodes the hex PCR values of the config's PCR policy.
func decodePCRPolicy(in map[string]map[int]string) (map[string]map[int][]byte, error) {
	out := make(map[string]map[int][]byte, len(in))
	for role, pcrs := range in {
		out[role] = make(map[int][]byte, len(pcrs))
		for i, v := range pcrs {
			b, err := hex.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("pcr_policy: role %s: PCR %d: %w", role, i, err)
			}
			out[role][i] = b
		}
	}
	return out, nil
}

// operatorAuth returns the operators' authenticator: the static admin
// token (the configured one, or the one in the data directory, generated
// on first start), then OIDC access tokens when an issuer is configured.
func operatorAuth(ctx context.Context, cfg config.Config, dataDir string, log *slog.Logger) (auth.Authenticator, error) {
	static, err := adminToken(cfg, dataDir, log)
	if err != nil {
		return nil, err
	}
	if cfg.OIDCIssuer == "" {
		return static, nil
	}
	roleMap := map[string]auth.Role{}
	for v, r := range cfg.OIDCRoleMap {
		roleMap[v] = auth.Role(r)
	}
	oidc, err := auth.NewOIDC(ctx, auth.OIDCConfig{
		Issuer:     cfg.OIDCIssuer,
		Audience:   cfg.OIDCAudience,
		RoleClaims: cfg.OIDCRoleClaims,
		RoleMap:    roleMap,
		Logger:     log.With("component", "oidc"),
	})
	if err != nil {
		return nil, err
	}
	return auth.Chain{static, oidc}, nil
}

// adminToken returns the static-token authenticator.
func adminToken(cfg config.Config, dataDir string, log *slog.Logger) (auth.Authenticator, error) {
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
