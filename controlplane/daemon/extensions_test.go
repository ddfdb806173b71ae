package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/spf13/cobra"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/extensions"
	"github.com/attestation/attestation/extensions/extensiontest"
	"github.com/attestation/attestation/internal/pgtest"
)

// probe is a configurable extension for host tests.
type probe struct {
	name       string
	migrations fs.FS
	handle     func(ctx context.Context, ev events.Registered) error
	startErr   error
	commands   func(extensions.CLI) ([]*cobra.Command, error)

	mu       sync.Mutex
	got      []string // event IDs handled
	starts   int
	stops    int
	host     *extensions.Host
	routeHit atomic.Int32
}

func (p *probe) Info() extensions.Info {
	return extensions.Info{Name: p.name, Version: "1.2.3", Description: "probe " + p.name}
}

func (p *probe) Provision(_ context.Context, h *extensions.Host) error {
	p.host = h
	return nil
}

func (p *probe) Migrations() fs.FS {
	if p.migrations == nil {
		return fstest.MapFS{}
	}
	return p.migrations
}

func (p *probe) HandleEvents(h *extensions.Handlers) {
	h.OnRegistered(func(ctx context.Context, ev events.Registered) error {
		if p.handle != nil {
			if err := p.handle(ctx, ev); err != nil {
				return err
			}
		}
		p.mu.Lock()
		p.got = append(p.got, ev.ID)
		p.mu.Unlock()
		return nil
	})
}

func (p *probe) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		p.routeHit.Add(1)
		fmt.Fprint(w, extensions.Caller(r.Context()))
	})
}

func (p *probe) Start(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts++
	return p.startErr
}

func (p *probe) Stop(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stops++
	return nil
}

func (p *probe) Commands(c extensions.CLI) ([]*cobra.Command, error) {
	if p.commands != nil {
		return p.commands(c)
	}
	return []*cobra.Command{{
		Use:  p.name,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(c.Stdout(), "hello from", p.name, "token", c.Token() != "")
			return nil
		},
	}}, nil
}

func (p *probe) handled() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

var (
	_ extensions.Provisioner  = (*probe)(nil)
	_ extensions.Migrator     = (*probe)(nil)
	_ extensions.EventHandler = (*probe)(nil)
	_ extensions.Router       = (*probe)(nil)
	_ extensions.Starter      = (*probe)(nil)
	_ extensions.Stopper      = (*probe)(nil)
	_ extensions.Commander    = (*probe)(nil)
)

func extensionStatuses(t *testing.T, kit *extensiontest.Kit) map[string]map[string]string {
	t.Helper()
	status, body := kit.Do(t, http.MethodGet, "/api/v1/extensions", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /api/v1/extensions: HTTP %d: %s", status, body)
	}
	var out map[string]map[string]string
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer collects the daemon's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestExtensionHandlerIsolation(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	panicky := &probe{name: "panicky", handle: func(context.Context, events.Registered) error { panic("boom") }}
	sleepy := &probe{name: "sleepy", handle: func(ctx context.Context, _ events.Registered) error {
		<-release // ignores ctx on purpose: the dispatcher must abandon it
		return nil
	}}
	failing := &probe{name: "failing", handle: func(context.Context, events.Registered) error { return errors.New("nope") }}
	healthy := &probe{name: "healthy"}
	var logs lockedBuffer
	kit := extensiontest.StartWith(t, extensiontest.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}, panicky, sleepy, failing, healthy)

	var ids []string
	for range 5 {
		ids = append(ids, kit.RegisterMachine(t))
	}
	waitFor(t, "the healthy extension to get all five events", func() bool { return len(healthy.handled()) == 5 })
	for _, p := range []*probe{panicky, sleepy, failing} {
		if got := p.handled(); len(got) != 0 {
			t.Errorf("%s recorded %v; its handler never succeeds", p.name, got)
		}
	}
	// The API still answers while the three misbehave.
	if status, body := kit.Do(t, http.MethodGet, "/api/v1/machines", nil); status != http.StatusOK {
		t.Fatalf("GET /api/v1/machines: HTTP %d: %s", status, body)
	}
	waitFor(t, "the failures to be logged", func() bool {
		l := logs.String()
		return strings.Contains(l, "event handler panicked") && strings.Contains(l, "subscriber=failing.node.registered")
	})
	waitFor(t, "the failures to be counted", func() bool {
		status, body := kit.Do(t, http.MethodGet, "/metrics", nil)
		m := string(body)
		return status == 200 &&
			strings.Contains(m, `attestation_event_deliveries_total{result="panic",subscriber="panicky.node.registered"}`) &&
			strings.Contains(m, `attestation_event_deliveries_total{result="error",subscriber="failing.node.registered"}`) &&
			strings.Contains(m, `attestation_event_deliveries_total{result="ok",subscriber="healthy.node.registered"} 5`)
	})
	for name, st := range extensionStatuses(t, kit) {
		if st["status"] != "running" {
			t.Errorf("%s: status %q, want running (failing handlers do not fail the extension)", name, st["status"])
		}
	}
}

func TestExtensionRoutesAndCaller(t *testing.T) {
	p := &probe{name: "probe"}
	kit := extensiontest.Start(t, p)
	status, body := kit.Do(t, http.MethodGet, "/api/v1/probe/whoami", nil)
	if status != http.StatusOK || string(body) != "admin-token" {
		t.Fatalf("GET /api/v1/probe/whoami = %d %q, want 200 \"admin-token\" (the caller)", status, body)
	}
	resp, err := http.Get(kit.URL + "/api/v1/probe/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: HTTP %d, want 401", resp.StatusCode)
	}
	if p.routeHit.Load() != 1 {
		t.Fatalf("route ran %d times, want once (not for the unauthenticated request)", p.routeHit.Load())
	}
	if p.host == nil || p.host.DB == nil || p.host.Logger == nil || !strings.HasPrefix(p.host.BaseURL, "http://127.0.0.1:") || p.host.Name != "probe" {
		t.Fatalf("host = %+v; want name, DB, logger and a loopback base URL", p.host)
	}
}

func TestExtensionMigrationPrefix(t *testing.T) {
	good := &probe{name: "good", migrations: fstest.MapFS{
		"0001_create.sql": {Data: []byte("CREATE TABLE extension_good_items (id TEXT PRIMARY KEY);")},
	}}
	bad := &probe{name: "bad", migrations: fstest.MapFS{
		"0001_create.sql": {Data: []byte("CREATE TABLE extension_bad_ok (id TEXT);\nCREATE TABLE machines_shadow (id TEXT);")},
	}}
	kit := extensiontest.Start(t, good, bad)
	st := extensionStatuses(t, kit)
	if st["good"]["status"] != "running" {
		t.Errorf("good: status %q, want running", st["good"]["status"])
	}
	if s := st["bad"]["status"]; !strings.HasPrefix(s, "failed:") || !strings.Contains(s, `"machines_shadow"`) || !strings.Contains(s, "extension_bad_") {
		t.Errorf("bad: status %q, want failed naming machines_shadow and the prefix", s)
	}
	// Nothing of the refused migration ran, not even its valid statement.
	db, err := openDB(kit.DatabasePath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name IN ('extension_bad_ok', 'machines_shadow')`).Scan(&n)
	if n != 0 {
		t.Errorf("%d tables of the refused migration exist, want 0", n)
	}
	db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'extension_good_items'`).Scan(&n)
	if n != 1 {
		t.Errorf("extension_good_items missing")
	}
	// The refused extension's routes answer 503, its starts never ran.
	if status, _ := kit.Do(t, http.MethodGet, "/api/v1/bad/whoami", nil); status != http.StatusServiceUnavailable {
		t.Errorf("GET /api/v1/bad/whoami: HTTP %d, want 503", status)
	}
	if bad.starts != 0 || good.starts != 1 {
		t.Errorf("starts: bad %d, good %d; want 0 and 1", bad.starts, good.starts)
	}
	if bad.routeHit.Load() != 0 {
		t.Errorf("the refused extension's route ran")
	}
}

func TestExtensionStartFailureAndStopOrder(t *testing.T) {
	var logs lockedBuffer
	broken := &probe{name: "broken", startErr: errors.New("cannot reach the printer")}
	fine := &probe{name: "fine"}
	kit := extensiontest.StartWith(t, extensiontest.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}, broken, fine)
	st := extensionStatuses(t, kit)
	if s := st["broken"]["status"]; !strings.Contains(s, "cannot reach the printer") {
		t.Errorf("broken: status %q, want the start error", s)
	}
	if st["fine"]["status"] != "running" || st["fine"]["version"] != "1.2.3" || st["fine"]["description"] != "probe fine" {
		t.Errorf("fine: %v", st["fine"])
	}
	l := logs.String()
	if !strings.Contains(l, `msg="Loaded extension: fine v1.2.3"`) {
		t.Errorf("log lacks the Loaded extension line for fine:\n%s", l)
	}
	if strings.Contains(l, "Loaded extension: broken") || !strings.Contains(l, "extension failed to start") {
		t.Errorf("log should report broken as failed, not loaded:\n%s", l)
	}
	kit.Stop(t)
	if fine.stops != 1 || broken.stops != 0 {
		t.Errorf("stops: fine %d, broken %d; want 1 and 0 (a failed start is not stopped)", fine.stops, broken.stops)
	}
}

func TestExtensionReservedAndSettings(t *testing.T) {
	shadow := &probe{name: "machines"}
	p := &probe{name: "probe"}
	kit := extensiontest.StartWith(t, daemontest.Options{}, shadow, p)
	if s := extensionStatuses(t, kit)["machines"]["status"]; !strings.Contains(s, "taken by the core API") {
		t.Errorf("an extension named machines: status %q, want refused", s)
	}
	// The core route still works.
	if status, body := kit.Do(t, http.MethodGet, "/api/v1/machines", nil); status != http.StatusOK {
		t.Fatalf("GET /api/v1/machines: HTTP %d: %s", status, body)
	}
}

func TestExtensionCLIPluginFailure(t *testing.T) {
	panics := &probe{name: "panics", commands: func(extensions.CLI) ([]*cobra.Command, error) { panic("no commands today") }}
	errs := &probe{name: "errs", commands: func(extensions.CLI) ([]*cobra.Command, error) { return nil, errors.New("bad flags") }}
	works := &probe{name: "works"}
	kit := extensiontest.Start(t, panics, errs, works)

	res := kit.CLI("works")
	if res.Code != 0 || !strings.Contains(res.Stdout, "hello from works token true") {
		t.Fatalf("works: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	for _, want := range []string{"extension panics: cannot add its commands: panicked: no commands today", "extension errs: cannot add its commands: bad flags"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr %q lacks %q", res.Stderr, want)
		}
	}
	if res := kit.CLI("machines", "list"); res.Code != 0 {
		t.Fatalf("core commands broken by a failing plugin: exit %d: %s", res.Code, res.Stderr)
	}
	// Token() ends the command with a clear message when there is none.
	res = kit.CLIEnv(map[string]string{"ATTESTATION_API_URL": kit.URL, "HOME": t.TempDir()}, "works")
	if res.Code != 1 || !strings.Contains(res.Stderr, "not logged in") || !strings.Contains(res.Stderr, "ATTESTATION_TOKEN") {
		t.Fatalf("works without a token: exit %d, stderr %q; want a not-logged-in message", res.Code, res.Stderr)
	}
}

// TestExtensionMigrationsOnPostgres: on PostgreSQL an extension's
// migrations come from its directory postgres; one without it is not
// loaded, and says why, naming the extension.
func TestExtensionMigrationsOnPostgres(t *testing.T) {
	both := &probe{name: "both", migrations: fstest.MapFS{
		"0001_create.sql":          {Data: []byte("CREATE TABLE extension_both_items (id TEXT PRIMARY KEY, n INTEGER);")},
		"postgres/0001_create.sql": {Data: []byte("CREATE TABLE extension_both_items (id TEXT PRIMARY KEY, n BIGINT);")},
	}}
	sqliteOnly := &probe{name: "lite", migrations: fstest.MapFS{
		"0001_create.sql": {Data: []byte("CREATE TABLE extension_lite_items (id TEXT PRIMARY KEY);")},
	}}
	kit := extensiontest.StartWith(t, extensiontest.Options{Config: func(c *config.Config) { c.Database = pgtest.DSN(t) }}, both, sqliteOnly)
	st := extensionStatuses(t, kit)
	if st["both"]["status"] != "running" {
		t.Errorf("both: status %q, want running", st["both"]["status"])
	}
	want := "failed: migrations: extension lite has no PostgreSQL migrations"
	if s := st["lite"]["status"]; !strings.HasPrefix(s, want) {
		t.Errorf("lite: status %q, want it to start %q", s, want)
	}
	if _, err := both.host.DB.ExecContext(t.Context(), `INSERT INTO extension_both_items (id, n) VALUES (?, ?)`, "a", int64(1)<<40); err != nil {
		t.Errorf("use the table of the PostgreSQL migration with ? placeholders: %v", err)
	}
}
