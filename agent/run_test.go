package agent_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/agent"
)

// unreachable returns the URL of a port nothing listens on.
func unreachable(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return "http://" + l.Addr().String()
}

// Failures that trying again cannot fix end Run at once, saying what is
// wrong, instead of being retried for ever (the backoff here is an hour).
func TestRunStopsForGood(t *testing.T) {
	dir := t.TempDir()
	notDevice := filepath.Join(dir, "tpmrm0")
	if err := os.WriteFile(notDevice, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notControlPlane := httptest.NewServer(http.NotFoundHandler())
	defer notControlPlane.Close()
	down := unreachable(t)
	for _, c := range []struct {
		name string
		cfg  agent.Config
		want string
	}{
		{"TPM path is not a device", agent.Config{Server: down, TPM: notDevice}, "not a device"},
		{"TPM below a file", agent.Config{Server: down, TPM: filepath.Join(notDevice, "tpm")}, "not a directory"},
		{"required TPM missing", agent.Config{Server: down, TPM: "/nonexistent/tpm", RequireTPM: true}, "attestation.require_tpm"},
		{"unknown TPM scheme", agent.Config{Server: down, TPM: "mssim://127.0.0.1:2321"}, "unknown scheme"},
		{"not a control plane", agent.Config{Server: notControlPlane.URL, TPM: "/nonexistent/tpm"}, "does not serve the agent API"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.ConfigOut = filepath.Join(t.TempDir(), "config")
			cfg.Retry = agent.Backoff{Min: time.Hour, Max: time.Hour}
			cfg.SlowRetry = cfg.Retry
			cfg.Logger = newLogs(t).logger()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err := agent.Run(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) || ctx.Err() != nil {
				t.Fatalf("agent.Run = %v, want an error with %q before the context ends", err, c.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("agent.Run took %s to give up, want at once", d)
			}
		})
	}
}

// Failures that may pass (nothing listening, a control plane that says
// it is unavailable) are retried until the context ends.
func TestRunRetriesTransient(t *testing.T) {
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	defer unavailable.Close()
	for _, c := range []struct{ name, server string }{
		{"nothing listening", unreachable(t)},
		{"unavailable", unavailable.URL},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLogs(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- agent.Run(ctx, agent.Config{
					Server: c.server, TPM: "/nonexistent/tpm", ConfigOut: filepath.Join(t.TempDir(), "config"),
					Retry: agent.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}, Logger: l.logger(),
				})
			}()
			l.wait("registration failed", 2, 30*time.Second)
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("agent.Run after cancel = %v, want context.Canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("agent.Run did not return within 30s of cancel")
			}
		})
	}
}

// As /init the agent never gives up, not even on a failure that ends an
// ordinary agent: it runs again and again until the context ends (which,
// for process 1, is never).
func TestKeepRunning(t *testing.T) {
	l := newLogs(t)
	cfg := agent.Config{Server: unreachable(t), TPM: "/nonexistent/tpm", RequireTPM: true,
		ConfigOut: filepath.Join(t.TempDir(), "config"), Logger: l.logger()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		agent.KeepRunning(ctx, cfg, l.logger(), 10*time.Millisecond)
		close(done)
	}()
	for n := 1; n <= 2; n++ {
		if err := l.wait("agent stopped: starting again", n, 30*time.Second)["err"]; !strings.Contains(err, "attestation.require_tpm") {
			t.Errorf("restart %d after %q, want the missing TPM", n, err)
		}
	}
	select {
	case <-done:
		t.Fatal("keepRunning returned before the context ended")
	default:
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("keepRunning did not return within 30s of cancel")
	}
}
