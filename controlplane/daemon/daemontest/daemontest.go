// Package daemontest starts a real attestationd on a loopback port with a
// temporary SQLite database, for tests that drive it through its front
// door (Connect, gRPC, REST, the CLI).
package daemontest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/pki"
	"github.com/attestation/attestation/extensions"
)

// Token is the admin token every test daemon accepts.
const Token = "daemontest-admin-token-0123456789"

// Options tune a test daemon.
type Options struct {
	// DataDir reuses a data directory (default: a new t.TempDir()).
	DataDir string
	// Subscriptions are added to the event dispatcher.
	Subscriptions []events.Subscription
	// Config adjusts the config before start.
	Config func(*config.Config)
	// Logger receives the daemon's logs (default: t.Log at warn level).
	Logger *slog.Logger
	// Extensions are exactly the extensions to run (nil: none, unlike the
	// daemon, whose nil means every registered one).
	Extensions []extensions.Extension
}

// Daemon is a running test daemon.
type Daemon struct {
	// URL is the API's base URL, like http://127.0.0.1:40123, or
	// https://127.0.0.1:40123 when the config turns TLS on.
	URL string
	// PlainURL is plain http:// on the same port, which a daemon serving
	// TLS still serves to loopback clients.
	PlainURL string
	Addr     net.Addr
	DataDir  string
	Token    string
	// CAFile is the daemon CA's certificate: DATA_DIR/ca.crt, or the
	// configured ca_cert.
	CAFile string
	// Client reaches URL: with TLS on it trusts the daemon's CA (CAFile)
	// and speaks HTTP/2.
	Client *http.Client
	cancel context.CancelFunc
	done   chan error
}

// Start runs a daemon until the test ends (or Stop).
func Start(t testing.TB, o Options) *Daemon {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = o.DataDir
	cfg.AdminToken = Token
	if o.Config != nil {
		o.Config(&cfg)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{DataDir: o.DataDir, Token: cfg.AdminToken, cancel: cancel, done: make(chan error, 1)}
	addr := make(chan net.Addr, 1)
	go func() {
		d.done <- daemon.Run(ctx, cfg, daemon.Options{
			Logger:        log,
			Subscriptions: o.Subscriptions,
			Listening:     func(a net.Addr) { addr <- a },
			Extensions:    append([]extensions.Extension{}, o.Extensions...),
		})
	}()
	select {
	case a := <-addr:
		d.Addr, d.URL, d.PlainURL, d.Client = a, "http://"+a.String(), "http://"+a.String(), http.DefaultClient
	case err := <-d.done:
		cancel()
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("daemon did not start within 30s")
	}
	t.Cleanup(func() { d.Stop(t) })
	d.CAFile = cfg.CACert
	if d.CAFile == "" {
		d.CAFile = filepath.Join(d.DataDir, pki.CertFile)
	}
	if cfg.TLS() {
		d.URL = "https://" + d.Addr.String()
		tr := &http.Transport{TLSClientConfig: d.TLSConfig(t), ForceAttemptHTTP2: true}
		d.Client = &http.Client{Transport: tr}
		t.Cleanup(tr.CloseIdleConnections)
	}
	return d
}

// TLSConfig is a client's TLS configuration trusting the daemon's CA
// (CAFile) alone.
func (d *Daemon) TLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	b, err := os.ReadFile(d.CAFile)
	if err != nil {
		t.Fatalf("daemon CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("daemon CA %s: no PEM certificate", d.CAFile)
	}
	return &tls.Config{RootCAs: pool}
}

// Stop shuts the daemon down and waits for it; calling it twice is fine.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("daemon stopped with error: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("daemon did not stop within 30s")
	}
}

// DatabasePath is the daemon's SQLite file.
func (d *Daemon) DatabasePath() string { return filepath.Join(d.DataDir, daemon.DatabaseFile) }

// AuthHeader returns the header that authenticates as admin.
func (d *Daemon) AuthHeader() http.Header {
	return http.Header{"Authorization": []string{"Bearer " + d.Token}}
}

// Get requests path without credentials and returns the status and body.
func (d *Daemon) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := d.Client.Get(d.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// testWriter logs through t until the test's cleanup has stopped the
// daemon; later writes (from abandoned handler goroutines) are dropped,
// since t.Log after the test ends panics.
type testWriter struct {
	t    testing.TB
	mu   *sync.Mutex
	done *bool
}

func newTestWriter(t testing.TB) testWriter {
	w := testWriter{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() {
		w.mu.Lock()
		*w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}
