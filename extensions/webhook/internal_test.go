package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/extensions"
)

func TestParseConfig(t *testing.T) {
	env := map[string]string{"OPS_SECRET": "from-env", "EMPTY": ""}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct {
		name    string
		raw     string
		wantErr string
		check   func(t *testing.T, s *settings)
	}{
		{name: "none", raw: "", check: func(t *testing.T, s *settings) {
			if len(s.targets) != 0 || s.maxAttempts != 8 || s.initialBackoff != time.Second || s.maxBackoff != time.Hour || s.retention != 30*24*time.Hour {
				t.Errorf("got %+v, want no targets and the defaults", s)
			}
		}},
		{name: "null", raw: "null", check: func(t *testing.T, s *settings) {
			if len(s.targets) != 0 {
				t.Errorf("got %d targets, want none", len(s.targets))
			}
		}},
		{name: "full", raw: `{"targets":[
				{"name":"ops","url":"https://ops.example/hook","secret":"s","events":["node.provisioned"],"timeout":"5s"},
				{"name":"audit","url":"http://10.0.0.1:8080","secret_env":"OPS_SECRET"}],
				"max_attempts":3,"initial_backoff":"50ms","max_backoff":"2s","retention":"24h"}`,
			check: func(t *testing.T, s *settings) {
				if len(s.targets) != 2 || s.maxAttempts != 3 || s.initialBackoff != 50*time.Millisecond || s.maxBackoff != 2*time.Second || s.retention != 24*time.Hour {
					t.Fatalf("got %+v", s)
				}
				ops, audit := s.targets[0], s.targets[1]
				if ops.timeout != 5*time.Second || string(ops.secret) != "s" || !ops.wants(events.TypeProvisioned) || ops.wants(events.TypeRegistered) {
					t.Errorf("ops: got %+v", ops)
				}
				if audit.timeout != 10*time.Second || string(audit.secret) != "from-env" || !audit.wants(events.TypeRegistered) {
					t.Errorf("audit: got %+v", audit)
				}
			}},
		{name: "max_backoff below a large initial_backoff defaults up", raw: `{"initial_backoff":"2h"}`, check: func(t *testing.T, s *settings) {
			if s.maxBackoff != 2*time.Hour {
				t.Errorf("max_backoff: got %s, want 2h", s.maxBackoff)
			}
		}},
		{name: "unknown key", raw: `{"target":[]}`, wantErr: `unknown field "target"`},
		{name: "unknown target key", raw: `{"targets":[{"name":"a","url":"http://a","secret":"s","filter":[]}]}`, wantErr: `unknown field "filter"`},
		{name: "trailing data", raw: `{} {}`, wantErr: "unexpected data after"},
		{name: "not an object", raw: `[]`, wantErr: "decode settings"},
		{name: "bad duration", raw: `{"initial_backoff":"soon"}`, wantErr: `initial_backoff "soon": want a duration like "10s"`},
		{name: "numeric duration", raw: `{"targets":[{"name":"a","url":"http://a","secret":"s","timeout":5}]}`, wantErr: `targets.timeout of type string`},
		{name: "negative attempts", raw: `{"max_attempts":-1}`, wantErr: "max_attempts -1: want 1 or more"},
		{name: "negative backoff", raw: `{"initial_backoff":"-1s"}`, wantErr: "initial_backoff -1s: must be positive"},
		{name: "max below initial", raw: `{"initial_backoff":"10s","max_backoff":"1s"}`, wantErr: "max_backoff 1s: must not be below initial_backoff 10s"},
		{name: "negative retention", raw: `{"retention":"-1h"}`, wantErr: "retention -1h0m0s: must be positive"},
		{name: "no name", raw: `{"targets":[{"url":"http://a","secret":"s"}]}`, wantErr: "targets[0]: name: required"},
		{name: "bad name", raw: `{"targets":[{"name":"a b","url":"http://a","secret":"s"}]}`, wantErr: `targets[0] (a b): name "a b": use letters`},
		{name: "no url", raw: `{"targets":[{"name":"a","secret":"s"}]}`, wantErr: "targets[0] (a): url: required"},
		{name: "ftp url", raw: `{"targets":[{"name":"a","url":"ftp://a/x","secret":"s"}]}`, wantErr: `url "ftp://a/x": want an http:// or https:// URL`},
		{name: "relative url", raw: `{"targets":[{"name":"a","url":"/hook","secret":"s"}]}`, wantErr: `url "/hook": want an http:// or https:// URL`},
		{name: "hostless url", raw: `{"targets":[{"name":"a","url":"https:///hook","secret":"s"}]}`, wantErr: `want an http:// or https:// URL with a host`},
		{name: "unparsable url", raw: `{"targets":[{"name":"a","url":"http://a b/%zz","secret":"s"}]}`, wantErr: `url "http://a b/%zz"`},
		{name: "no secret", raw: `{"targets":[{"name":"a","url":"http://a"}]}`, wantErr: "secret (or secret_env): required"},
		{name: "both secrets", raw: `{"targets":[{"name":"a","url":"http://a","secret":"s","secret_env":"OPS_SECRET"}]}`, wantErr: "set one, not both"},
		{name: "unset secret_env", raw: `{"targets":[{"name":"a","url":"http://a","secret_env":"NOPE"}]}`, wantErr: "secret_env NOPE: the variable is not set or empty"},
		{name: "empty secret_env", raw: `{"targets":[{"name":"a","url":"http://a","secret_env":"EMPTY"}]}`, wantErr: "secret_env EMPTY: the variable is not set or empty"},
		{name: "unknown event", raw: `{"targets":[{"name":"a","url":"http://a","secret":"s","events":["node.online","node.exploded"]}]}`, wantErr: `events[1] "node.exploded": unknown event type (want one of node.registered,`},
		{name: "negative timeout", raw: `{"targets":[{"name":"a","url":"http://a","secret":"s","timeout":"-1s"}]}`, wantErr: "timeout -1s: must be positive"},
		{name: "duplicate name", raw: `{"targets":[{"name":"a","url":"http://a","secret":"s"},{"name":"b","url":"http://b","secret":"s"},{"name":"a","url":"http://c","secret":"s"}]}`,
			wantErr: `targets[2]: name "a" is already used by targets[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseConfig(json.RawMessage(tc.raw), getenv)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			tc.check(t, s)
		})
	}
}

func TestSignAndVerify(t *testing.T) {
	secret, body := []byte("secret"), []byte(`{"event":"node.online"}`)
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if got := Sign(secret, body); got != want {
		t.Fatalf("Sign: got %s, want %s", got, want)
	}
	for _, tc := range []struct {
		name         string
		secret, body []byte
		sig          string
		want         bool
	}{
		{"good", secret, body, want, true},
		{"other secret", []byte("Secret"), body, want, false},
		{"other body", secret, []byte(`{"event":"node.online" }`), want, false},
		{"no prefix", secret, body, strings.TrimPrefix(want, "sha256="), false},
		{"not hex", secret, body, "sha256=zz", false},
		{"empty", secret, body, "", false},
	} {
		if got := Verify(tc.secret, tc.body, tc.sig); got != tc.want {
			t.Errorf("%s: Verify got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	initial, maxWait := 100*time.Millisecond, 2*time.Second
	for n, full := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		5: 1600 * time.Millisecond, 6: 2 * time.Second, 60: 2 * time.Second,
	} {
		for range 100 {
			if got := backoff(initial, maxWait, n); got < full/2 || got > full {
				t.Fatalf("backoff after attempt %d: got %s, want %s to %s", n, got, full/2, full)
			}
		}
	}
}

// TestMigrationsAreChecked: the host would load them.
func TestMigrationsAreChecked(t *testing.T) {
	fsys := (&Extension{}).Migrations()
	migs, err := store.LoadMigrations(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) == 0 {
		t.Fatal("no migrations")
	}
	for _, m := range migs {
		if err := extensions.CheckMigration(name, m.SQL); err != nil {
			t.Errorf("migration %04d_%s: %v", m.Version, m.Name, err)
		}
	}
	// And the check can fail.
	if err := extensions.CheckMigration(name, strings.ReplaceAll(migs[0].SQL, "extension_webhook_deliveries_due", "deliveries_due")); err == nil {
		t.Error("CheckMigration accepted an index without the prefix")
	}
	if _, err := fs.Stat(fsys, "0001_create_deliveries.sql"); err != nil {
		t.Error(err)
	}
}

// provisioned returns an extension provisioned against a fresh database
// with its migrations applied, as the host does it.
func provisioned(t *testing.T, settings string) (*Extension, *store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &Extension{}
	migs, err := store.LoadMigrations(e.Migrations(), ".")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Migrate(ctx, "extension_webhook", migs); err != nil {
		t.Fatal(err)
	}
	host := &extensions.Host{Name: name, Logger: slog.New(slog.DiscardHandler), DB: st.DB(), Config: json.RawMessage(settings)}
	if err := e.Provision(ctx, host); err != nil {
		t.Fatal(err)
	}
	return e, st
}

func TestStartAndStopAreIdempotent(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hits.Add(1)
	}))
	defer srv.Close()
	e, _ := provisioned(t, `{"targets":[{"name":"ops","url":"`+srv.URL+`","secret":"s"}]}`)
	ctx := context.Background()

	if err := e.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	for i := range 2 {
		if err := e.Start(ctx); err != nil {
			t.Fatalf("Start %d: %v", i+1, err)
		}
	}
	// Twice started, one worker: the event is sent once.
	env := events.Envelope{Seq: 1, ID: "ev-1", Type: events.TypeOnline, MachineID: "m", Time: time.Now(), Payload: json.RawMessage(`{"event":"node.online"}`)}
	for range 2 { // and a redelivered event is queued once
		if err := e.enqueue(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ds, err := e.queue.list(ctx, listFilter{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 {
			t.Fatalf("got %d deliveries of one event, want 1", len(ds))
		}
		if ds[0].Status == statusDelivered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery still %s after 60s", ds[0].Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 2 {
		if err := e.Stop(ctx); err != nil {
			t.Fatalf("Stop %d: %v", i+1, err)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
	// Started again after a stop, it works again.
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStopCutsShortAHangingRequest(t *testing.T) {
	release := make(chan struct{})
	reached := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	e, _ := provisioned(t, `{"targets":[{"name":"slow","url":"`+srv.URL+`","secret":"s","timeout":"1h"}]}`)
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	env := events.Envelope{Seq: 1, ID: "ev-1", Type: events.TypeOnline, Payload: json.RawMessage(`{}`)}
	if err := e.enqueue(ctx, env); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatal("the request did not reach the receiver within 60s")
	}
	stopCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := e.Stop(stopCtx); err != nil {
		t.Fatalf("Stop with a request in flight: %v", err)
	}
	// The cut-short attempt is not counted: it is made again after a restart.
	ds, err := e.queue.list(ctx, listFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Status != statusPending || ds[0].Attempts != 0 {
		t.Errorf("after Stop: got %+v, want one pending delivery with no attempt counted", ds)
	}
}

func TestStartWithoutProvision(t *testing.T) {
	if err := (&Extension{}).Start(context.Background()); err == nil {
		t.Error("Start of an extension never provisioned: got nil, want an error")
	}
}

func TestPrune(t *testing.T) {
	e, _ := provisioned(t, `{"targets":[{"name":"a","url":"http://127.0.0.1:1","secret":"s"}]}`)
	ctx := context.Background()
	now := time.Now()
	e.queue.now = func() time.Time { return now.Add(-48 * time.Hour) }
	if err := e.enqueue(ctx, events.Envelope{Seq: 1, ID: "old", Type: events.TypeOnline, Payload: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	e.queue.now = func() time.Time { return now }
	if err := e.enqueue(ctx, events.Envelope{Seq: 2, ID: "new", Type: events.TypeOnline, Payload: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	n, err := e.queue.prune(ctx, now.Add(-24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("prune: got %d, %v; want 1 deleted", n, err)
	}
	ds, err := e.queue.list(ctx, listFilter{Limit: 10})
	if err != nil || len(ds) != 1 || ds[0].EventID != "new" {
		t.Errorf("after prune: got %+v, %v; want only the new delivery", ds, err)
	}
}

// TestConfigURLOnlyToTargetsThatAsk: with one target taking config URLs,
// the subscription asks for them, that target's delivery of
// node.provisioned carries config_url and the other's does not.
func TestConfigURLOnlyToTargetsThatAsk(t *testing.T) {
	e, _ := provisioned(t, `{"targets":[
		{"name":"provisioner","url":"http://127.0.0.1:9/","secret":"s","include_config_url":true},
		{"name":"chat","url":"http://127.0.0.1:9/","secret":"s"}]}`)
	h := extensions.NewHandlers(name)
	e.HandleEvents(h)
	if subs := h.Subscriptions(); len(subs) != 1 || !subs[0].ConfigURLs {
		t.Fatalf("subscriptions %+v: want one that asks for config URLs", subs)
	}
	ctx := context.Background()
	env := events.Envelope{Seq: 1, ID: "ev-1", Type: events.TypeProvisioned, MachineID: "m", Time: time.Now(),
		Payload: json.RawMessage(`{"event":"node.provisioned","config_token_id":"0f0f","config_url":"http://cp/config/secret"}`)}
	if err := e.enqueue(ctx, env); err != nil {
		t.Fatal(err)
	}
	ds, err := e.queue.list(ctx, listFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("%d deliveries, want 2", len(ds))
	}
	for _, d := range ds {
		has := strings.Contains(string(d.Payload), "config/secret")
		if want := d.Target == "provisioner"; has != want || !strings.Contains(string(d.Payload), `"config_token_id":"0f0f"`) {
			t.Errorf("target %s got %s: config URL present %v, want %v, and the token ID either way", d.Target, d.Payload, has, want)
		}
	}

	// Without such a target, nothing asks for them.
	e, _ = provisioned(t, `{"targets":[{"name":"chat","url":"http://127.0.0.1:9/","secret":"s"}]}`)
	h = extensions.NewHandlers(name)
	e.HandleEvents(h)
	if subs := h.Subscriptions(); subs[0].ConfigURLs {
		t.Error("no target takes config URLs, yet the subscription asks for them")
	}
}
