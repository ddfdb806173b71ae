package auth

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/attestation/attestation/controlplane/auth/authtest"
)

// TestKeySetRefetch: a key set whose first fetch failed is fetched again
// once keyRefetchInterval has passed, also for a token naming no key ID,
// and not before.
func TestKeySetRefetch(t *testing.T) {
	key := authtest.NewKey(t, jose.RS256, "")
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	var up atomic.Bool
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write(set)
	}))
	t.Cleanup(srv.Close)
	now := time.Now()
	k := &keySet{url: srv.URL, client: srv.Client(), now: func() time.Time { return now }, log: slog.New(slog.DiscardHandler)}
	tok := authtest.Sign(t, key, authtest.Claims{"sub": "alice"})

	var u *UnavailableError
	for range 3 {
		if _, err := k.VerifySignature(t.Context(), tok); !errors.As(err, &u) {
			t.Fatalf("keys down: got %v, want unavailable", err)
		}
	}
	if got := fetches.Load(); got != 1 {
		t.Errorf("keys down: %d fetches within the interval, want 1", got)
	}
	up.Store(true)
	now = now.Add(keyRefetchInterval)
	if _, err := k.VerifySignature(t.Context(), tok); err != nil {
		t.Fatalf("keys up again, a token with no key ID: %v", err)
	}
	if got := fetches.Load(); got != 2 {
		t.Errorf("keys up again: %d fetches, want 2", got)
	}
}
