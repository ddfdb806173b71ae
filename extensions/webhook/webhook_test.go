package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/extensions/extensiontest"
	"github.com/attestation/attestation/extensions/webhook"
)

// waitTimeout bounds every wait for something asynchronous; generous, so
// that a loaded machine makes a test slow, never failed.
const waitTimeout = 60 * time.Second

// received is one request a receiver got.
type received struct {
	Header http.Header
	Body   []byte
	// SignatureOK: the signature header is the HMAC-SHA256 of the body
	// with the receiver's secret, computed here independently.
	SignatureOK bool
	Event       map[string]any
}

// receiver is a webhook endpoint that checks signatures and answers what
// respond says for its n'th request (1-based; nil: 204).
type receiver struct {
	srv     *httptest.Server
	secret  string
	respond func(n int, w http.ResponseWriter, r *http.Request)

	stop chan struct{} // closed when the test ends

	mu  sync.Mutex
	got []received
}

func newReceiver(t *testing.T, secret string, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{secret: secret, respond: respond, stop: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		mac := hmac.New(sha256.New, []byte(rc.secret))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		rec := received{
			Header:      r.Header.Clone(),
			Body:        body,
			SignatureOK: hmac.Equal([]byte(r.Header.Get("X-Attestation-Signature")), []byte(want)),
		}
		_ = json.Unmarshal(body, &rec.Event)
		rc.mu.Lock()
		rc.got = append(rc.got, rec)
		n := len(rc.got)
		rc.mu.Unlock()
		if rc.respond != nil {
			rc.respond(n, w, r)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(func() {
		close(rc.stop)
		rc.srv.Close()
	})
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// events returns the event types received, in order, leaving out tests.
func (rc *receiver) events() []string {
	var out []string
	for _, r := range rc.requests() {
		if e, _ := r.Event["event"].(string); e != webhook.TestEvent {
			out = append(out, e)
		}
	}
	return out
}

// newHangingReceiver answers nothing until the request is abandoned or
// the test ends.
func newHangingReceiver(t *testing.T, secret string) *receiver {
	var rc *receiver
	rc = newReceiver(t, secret, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-rc.stop:
		}
	})
	return rc
}

// closedURL is an http URL on a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/hook"
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs a daemon with the webhook extension and settings as its
// section of the config file.
func start(t *testing.T, settings map[string]any) *extensiontest.Kit {
	t.Helper()
	return startIn(t, "", settings)
}

func startIn(t *testing.T, dataDir string, settings map[string]any) *extensiontest.Kit {
	t.Helper()
	raw, err := json.Marshal(settings)
	if err != nil {
		t.Fatal(err)
	}
	return extensiontest.StartWith(t, extensiontest.Options{
		DataDir: dataDir,
		Config: func(c *config.Config) {
			c.Extensions = map[string]json.RawMessage{"webhook": raw}
		},
	}, &webhook.Extension{})
}

func getJSON[T any](t *testing.T, kit *extensiontest.Kit, path string) T {
	t.Helper()
	status, body := kit.Do(t, http.MethodGet, path, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: got HTTP %d %s, want 200", path, status, body)
	}
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("GET %s: decode %s: %v", path, body, err)
	}
	return v
}

func deliveries(t *testing.T, kit *extensiontest.Kit, query string) []webhook.Delivery {
	t.Helper()
	return getJSON[webhook.DeliveryList](t, kit, "/api/v1/webhook/deliveries?"+query).Deliveries
}

func revoke(t *testing.T, kit *extensiontest.Kit, id string) {
	t.Helper()
	status, body := kit.Do(t, http.MethodPost, "/api/v1/machines/"+id+"/revoke", map[string]any{"reason": "x"})
	if status != http.StatusOK {
		t.Fatalf("revoke %s: HTTP %d %s", id, status, body)
	}
}

func TestDeliversSignedEventsToMatchingTargets(t *testing.T) {
	t.Parallel()
	all := newReceiver(t, "all-secret", nil)
	filtered := newReceiver(t, "filtered-secret", nil)
	kit := start(t, map[string]any{"targets": []map[string]any{
		{"name": "all", "url": all.srv.URL + "/hook", "secret": "all-secret"},
		{"name": "filtered", "url": filtered.srv.URL, "secret": "filtered-secret", "events": []string{"node.decommissioned"}},
	}})

	id := kit.RegisterMachine(t)
	revoke(t, kit, id)

	// Recorded as delivered only after the receivers answered.
	waitFor(t, "both events delivered to the unfiltered target", func() bool {
		return len(deliveries(t, kit, "target=all&status=delivered")) >= 2
	})
	waitFor(t, "the decommission delivered to the filtered target", func() bool {
		return len(deliveries(t, kit, "target=filtered&status=delivered")) >= 1
	})

	if got, want := strings.Join(all.events(), ","), "node.registered,node.decommissioned"; got != want {
		t.Errorf("unfiltered target got events %s, want %s", got, want)
	}
	// The filtered target's only row is the decommission: a registered one
	// would have been queued first, in the same transaction as all's.
	if ds := deliveries(t, kit, "target=filtered"); len(ds) != 1 || ds[0].EventType != "node.decommissioned" {
		t.Errorf("filtered target's deliveries: got %+v, want one node.decommissioned", ds)
	}
	if got := filtered.events(); len(got) != 1 || got[0] != "node.decommissioned" {
		t.Errorf("filtered target got events %v, want [node.decommissioned]", got)
	}

	log := deliveries(t, kit, "target=all")
	if len(log) != 2 {
		t.Fatalf("deliveries of all: got %d, want 2: %+v", len(log), log)
	}
	if log[0].EventType != "node.decommissioned" || log[1].EventType != "node.registered" {
		t.Errorf("deliveries of all: got %s then %s, want newest (node.decommissioned) first", log[0].EventType, log[1].EventType)
	}
	byDelivery := map[string]webhook.Delivery{}
	for _, d := range log {
		byDelivery[d.ID] = d
		if d.Status != "delivered" || d.Attempts != 1 || d.LastStatusCode != http.StatusNoContent || d.DeliveredAt == nil || d.MachineID != id {
			t.Errorf("delivery %+v: want delivered on the first attempt with 204, for machine %s", d, id)
		}
	}

	for _, r := range append(all.requests(), filtered.requests()...) {
		if !r.SignatureOK {
			t.Errorf("signature %q does not verify over body %s", r.Header.Get("X-Attestation-Signature"), r.Body)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type: got %q, want application/json", got)
		}
		if got, want := r.Header.Get("X-Attestation-Event"), r.Event["event"]; got != want {
			t.Errorf("X-Attestation-Event: got %q, want the body's event %q", got, want)
		}
		if got := r.Header.Get("X-Attestation-Attempt"); got != "1" {
			t.Errorf("X-Attestation-Attempt: got %q, want 1", got)
		}
		if r.Event["machine_id"] != id || r.Event["ek_fingerprint"] == "" || r.Event["id"] == "" || r.Event["timestamp"] == "" {
			t.Errorf("body %s: want event, id, machine_id %s, ek_fingerprint, timestamp", r.Body, id)
		}
		// Both events are the admin's doing: registered and revoked over the API.
		if actor, _ := r.Event["actor"].(map[string]any); actor["subject"] != "admin-token" || actor["name"] != "admin-token" {
			t.Errorf("body %s: want the actor {subject: admin-token, name: admin-token}", r.Body)
		}
	}
	for _, r := range all.requests() {
		d, ok := byDelivery[r.Header.Get("X-Attestation-Delivery")]
		if !ok {
			t.Errorf("X-Attestation-Delivery %q: not in the delivery log", r.Header.Get("X-Attestation-Delivery"))
			continue
		}
		if d.EventID != r.Event["id"] {
			t.Errorf("delivery %s: event id %s in the log, %v in the body", d.ID, d.EventID, r.Event["id"])
		}
		if r.Event["event"] == "node.decommissioned" && r.Event["reason"] != "x" {
			t.Errorf("decommission body %s: want reason x", r.Body)
		}
	}

	// The same log through the CLI.
	res := kit.CLI("webhook", "deliveries", "--target", "all")
	if res.Code != 0 {
		t.Fatalf("webhook deliveries: exit %d: %s", res.Code, res.Stderr)
	}
	for _, want := range []string{"STATUS", "node.registered", "node.decommissioned", "delivered", id} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("webhook deliveries table: want %q in\n%s", want, res.Stdout)
		}
	}
	if strings.Contains(res.Stdout, "filtered") {
		t.Errorf("webhook deliveries --target all shows the filtered target:\n%s", res.Stdout)
	}
	res = kit.CLI("webhook", "deliveries", "--status", "delivered", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("webhook deliveries -o json: exit %d: %s", res.Code, res.Stderr)
	}
	var printed []webhook.Delivery
	if err := json.Unmarshal([]byte(res.Stdout), &printed); err != nil {
		t.Fatalf("webhook deliveries -o json: %v:\n%s", err, res.Stdout)
	}
	if len(printed) != 3 || printed[0].Attempts != 1 || printed[0].Status != "delivered" {
		t.Errorf("webhook deliveries -o json: got %+v, want 3 delivered on the first attempt", printed)
	}
	res = kit.CLI("webhook", "deliveries", "--status", "failed")
	if res.Code != 0 || !strings.HasPrefix(res.Stdout, "ID ") || strings.Count(res.Stdout, "\n") != 1 || res.Stderr != "no deliveries\n" {
		t.Errorf("webhook deliveries --status failed: got exit %d, stdout %q, stderr %q; want the header and \"no deliveries\" on stderr", res.Code, res.Stdout, res.Stderr)
	}
}

func TestRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, "s3cret", func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	kit := start(t, map[string]any{
		"targets":         []map[string]any{{"name": "flaky", "url": rc.srv.URL, "secret": "s3cret"}},
		"initial_backoff": "50ms",
		"max_attempts":    5,
	})
	kit.RegisterMachine(t)

	var d webhook.Delivery
	waitFor(t, "the delivery to succeed", func() bool {
		ds := deliveries(t, kit, "target=flaky")
		if len(ds) == 1 {
			d = ds[0]
		}
		if d.Status == "failed" {
			t.Fatalf("delivery failed: %+v", d)
		}
		return d.Status == "delivered"
	})
	if d.Attempts != 3 || d.LastStatusCode != http.StatusOK || d.LastError != "" {
		t.Errorf("delivery: got attempts %d, status %d, error %q; want 3, 200, none", d.Attempts, d.LastStatusCode, d.LastError)
	}
	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if got := r.Header.Get("X-Attestation-Delivery"); got != d.ID {
			t.Errorf("request %d: X-Attestation-Delivery %q, want %q on every attempt", i+1, got, d.ID)
		}
		if got, want := r.Header.Get("X-Attestation-Attempt"), fmt.Sprint(i+1); got != want {
			t.Errorf("request %d: X-Attestation-Attempt %q, want %s", i+1, got, want)
		}
		if string(r.Body) != string(reqs[0].Body) || !r.SignatureOK {
			t.Errorf("request %d: body %s (signature ok: %v), want the first body again, signed", i+1, r.Body, r.SignatureOK)
		}
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, "s3cret", func(_ int, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken\nfor good", http.StatusInternalServerError)
	})
	kit := start(t, map[string]any{
		"targets":         []map[string]any{{"name": "broken", "url": rc.srv.URL, "secret": "s3cret"}},
		"initial_backoff": "20ms",
		"max_attempts":    3,
	})
	kit.RegisterMachine(t)

	var d webhook.Delivery
	waitFor(t, "the delivery to fail", func() bool {
		ds := deliveries(t, kit, "status=failed")
		if len(ds) == 1 {
			d = ds[0]
		}
		return d.ID != ""
	})
	if d.Attempts != 3 || d.LastStatusCode != http.StatusInternalServerError || d.NextAttemptAt != nil {
		t.Errorf("failed delivery: got %+v, want 3 attempts, last status 500, no next attempt", d)
	}
	if want := "HTTP 500 Internal Server Error: broken for good"; d.LastError != want {
		t.Errorf("last error: got %q, want %q", d.LastError, want)
	}
	if n := len(rc.requests()); n != 3 {
		t.Errorf("receiver got %d requests, want 3 (max_attempts)", n)
	}
	targets := getJSON[webhook.TargetList](t, kit, "/api/v1/webhook/targets").Targets
	if len(targets) != 1 || targets[0].Failed != 1 || targets[0].Pending != 0 || targets[0].Delivered != 0 {
		t.Errorf("targets: got %+v, want broken with 1 failed", targets)
	}
}

// TestDeadTargetsDoNotHoldOthers: a target that never answers and one
// that refuses connections keep their deliveries pending while a healthy
// target gets every event and the API answers.
func TestDeadTargetsDoNotHoldOthers(t *testing.T) {
	t.Parallel()
	healthy := newReceiver(t, "h", nil)
	hang := newHangingReceiver(t, "hang")
	kit := start(t, map[string]any{"targets": []map[string]any{
		{"name": "hang", "url": hang.srv.URL, "secret": "hang", "timeout": "10m"},
		{"name": "closed", "url": closedURL(t), "secret": "c", "timeout": "10m"},
		{"name": "healthy", "url": healthy.srv.URL, "secret": "h"},
	}})

	var ids []string
	for range 3 {
		ids = append(ids, kit.RegisterMachine(t))
	}
	waitFor(t, "the hanging target to get its first request", func() bool { return len(hang.requests()) >= 1 })
	revoke(t, kit, ids[0])

	waitFor(t, "every event delivered to the healthy target", func() bool {
		return len(deliveries(t, kit, "target=healthy&status=delivered")) >= 4
	})
	if got := len(healthy.events()); got != 4 {
		t.Errorf("healthy target got %d events, want 4", got)
	}

	byTarget := map[string][]webhook.Delivery{}
	for _, d := range deliveries(t, kit, "") {
		byTarget[d.Target] = append(byTarget[d.Target], d)
	}
	for name, want := range map[string]string{"healthy": "delivered", "hang": "pending"} {
		if len(byTarget[name]) != 4 {
			t.Errorf("%s: got %d deliveries, want 4", name, len(byTarget[name]))
		}
		for _, d := range byTarget[name] {
			if d.Status != want {
				t.Errorf("%s: delivery of %s is %s, want %s", name, d.EventType, d.Status, want)
			}
		}
	}
	if n := len(hang.requests()); n != 1 {
		t.Errorf("hanging target got %d requests, want 1 (its worker waits on it)", n)
	}
	if len(byTarget["closed"]) != 4 {
		t.Errorf("closed: got %d deliveries, want 4", len(byTarget["closed"]))
	}
	for _, d := range byTarget["closed"] {
		if d.Status == "delivered" {
			t.Errorf("closed: delivery of %s is delivered", d.EventType)
		}
	}

	targets := getJSON[webhook.TargetList](t, kit, "/api/v1/webhook/targets").Targets
	counts := map[string]webhook.Target{}
	for _, tg := range targets {
		counts[tg.Name] = tg
	}
	if c := counts["healthy"]; c.Delivered != 4 || c.Pending != 0 {
		t.Errorf("healthy counts: got %+v, want 4 delivered", c)
	}
	if c := counts["hang"]; c.Pending != 4 {
		t.Errorf("hang counts: got %+v, want 4 pending", c)
	}

	// The closed port fails fast and says so.
	waitFor(t, "an attempt at the closed port", func() bool {
		for _, d := range deliveries(t, kit, "target=closed") {
			if d.Attempts > 0 {
				return true
			}
		}
		return false
	})
	for _, d := range deliveries(t, kit, "target=closed") {
		if d.Attempts > 0 && !strings.Contains(d.LastError, "refused") {
			t.Errorf("closed: last error %q, want connection refused", d.LastError)
		}
	}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	healthy := newReceiver(t, "healthy-secret", nil)
	dead := closedURL(t)
	kit := start(t, map[string]any{"targets": []map[string]any{
		{"name": "ops", "url": healthy.srv.URL + "/hook", "secret": "healthy-secret", "events": []string{"node.provisioned", "node.decommissioned"}, "timeout": "5s"},
		{"name": "dead", "url": strings.Replace(dead, "http://", "http://user:hunter2@", 1), "secret": "dead-secret"},
	}})

	res := kit.CLI("webhook", "list")
	if res.Code != 0 {
		t.Fatalf("webhook list: exit %d: %s", res.Code, res.Stderr)
	}
	for _, want := range []string{"NAME", "ops", healthy.srv.URL + "/hook", "node.provisioned,node.decommissioned", "5s", "dead", "all", "xxxxx"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("webhook list: want %q in\n%s", want, res.Stdout)
		}
	}
	for _, secret := range []string{"healthy-secret", "dead-secret", "hunter2"} {
		if strings.Contains(res.Stdout, secret) {
			t.Errorf("webhook list shows the secret %q:\n%s", secret, res.Stdout)
		}
	}

	res = kit.CLI("webhook", "list", "-o", "yaml")
	if res.Code != 0 || !strings.Contains(res.Stdout, "name: ops") {
		t.Errorf("webhook list -o yaml: got exit %d, %q; want name: ops", res.Code, res.Stdout)
	}
	res = kit.CLI("webhook")
	if res.Code != 0 || !strings.Contains(res.Stdout, "deliveries") || !strings.Contains(res.Stdout, "test") {
		t.Errorf("webhook: got exit %d, %q; want the group's help", res.Code, res.Stdout)
	}
	res = kit.CLI("webhook", "lsit")
	if res.Code == 0 || !strings.Contains(res.Stderr, `unknown command "lsit"`) {
		t.Errorf("webhook lsit: got exit %d, stderr %q; want unknown command", res.Code, res.Stderr)
	}

	res = kit.CLI("webhook", "list", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("webhook list -o json: exit %d: %s", res.Code, res.Stderr)
	}
	var listed []map[string]any
	if err := json.Unmarshal([]byte(res.Stdout), &listed); err != nil {
		t.Fatalf("webhook list -o json: %v:\n%s", err, res.Stdout)
	}
	if len(listed) != 2 || listed[0]["name"] != "dead" || listed[1]["name"] != "ops" {
		t.Fatalf("webhook list -o json: got %v, want dead and ops", listed)
	}
	if _, ok := listed[0]["secret"]; ok || strings.Contains(res.Stdout, "secret\"") {
		t.Errorf("webhook list -o json shows a secret: %s", res.Stdout)
	}
	if evs, ok := listed[0]["events"].([]any); !ok || len(evs) != 0 {
		t.Errorf("dead's events: got %v, want [] (all)", listed[0]["events"])
	}

	res = kit.CLI("webhook", "test", "ops")
	if res.Code != 0 {
		t.Fatalf("webhook test ops: exit %d: %s%s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "delivered") || !strings.Contains(res.Stdout, "204") {
		t.Errorf("webhook test ops: want delivered, 204 in\n%s", res.Stdout)
	}
	reqs := healthy.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want the one test", len(reqs))
	}
	r := reqs[0]
	if !r.SignatureOK || r.Header.Get("X-Attestation-Event") != webhook.TestEvent || r.Event["event"] != webhook.TestEvent ||
		r.Event["target"] != "ops" || r.Header.Get("X-Attestation-Delivery") != r.Event["id"] {
		t.Errorf("test request: signature ok %v, headers %v, body %s; want a signed webhook.test for ops", r.SignatureOK, r.Header, r.Body)
	}

	res = kit.CLI("webhook", "test", "dead", "-o", "json")
	if res.Code == 0 {
		t.Errorf("webhook test dead: exit 0, want failure:\n%s", res.Stdout)
	}
	if !strings.Contains(res.Stderr, "not delivered") || !strings.Contains(res.Stderr, "refused") {
		t.Errorf("webhook test dead: stderr %q, want not delivered: connection refused", res.Stderr)
	}
	var tr webhook.TestResult
	if err := json.Unmarshal([]byte(res.Stdout), &tr); err != nil || tr.Delivered || tr.Target != "dead" || tr.Error == "" {
		t.Errorf("webhook test dead -o json: got %+v (%v) from %q, want the failed result", tr, err, res.Stdout)
	}
	if strings.Contains(res.Stdout+res.Stderr, "hunter2") {
		t.Errorf("webhook test dead shows the URL's password: %s %s", res.Stdout, res.Stderr)
	}

	res = kit.CLI("webhook", "test", "nope")
	if res.Code == 0 || !strings.Contains(res.Stderr, `no webhook target named "nope"`) {
		t.Errorf("webhook test nope: got exit %d, stderr %q; want a not-found error", res.Code, res.Stderr)
	}
	res = kit.CLI("webhook", "test")
	if res.Code == 0 {
		t.Errorf("webhook test without a name: exit 0, want a usage error")
	}
	// Test sends are not queued: the log stays empty.
	if ds := deliveries(t, kit, ""); len(ds) != 0 {
		t.Errorf("deliveries after tests: got %+v, want none", ds)
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	kit := start(t, map[string]any{"targets": []map[string]any{{"name": "ops", "url": "http://127.0.0.1:1/", "secret": "s"}}})
	for _, tc := range []struct {
		name, method, path string
		status, code       int
		message            string
	}{
		{"bad status", "GET", "/api/v1/webhook/deliveries?status=lost", 400, 3, `status "lost"`},
		{"zero limit", "GET", "/api/v1/webhook/deliveries?limit=0", 400, 3, `limit "0"`},
		{"huge limit", "GET", "/api/v1/webhook/deliveries?limit=1000000", 400, 3, `limit "1000000"`},
		{"unknown parameter", "GET", "/api/v1/webhook/deliveries?machine=x", 400, 3, `unknown query parameter "machine"`},
		{"parameter on targets", "GET", "/api/v1/webhook/targets?all=1", 400, 3, `unknown query parameter "all"`},
		{"unknown target", "POST", "/api/v1/webhook/targets/nope/test", 404, 5, `no webhook target named "nope"`},
		{"unknown route", "GET", "/api/v1/webhook/hooks", 404, 12, "no route for GET /api/v1/webhook/hooks"},
		{"wrong method", "POST", "/api/v1/webhook/targets", 405, 12, "allowed: GET, HEAD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := kit.Do(t, tc.method, tc.path, nil)
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
				Details []any  `json:"details"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("got body %s, want a JSON error: %v", body, err)
			}
			if status != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.message) || e.Details == nil {
				t.Errorf("got HTTP %d %s, want %d with code %d and %q", status, body, tc.status, tc.code, tc.message)
			}
		})
	}
	// Without a token: the daemon's operator authentication.
	resp, err := http.Get(kit.URL + "/api/v1/webhook/targets")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /targets without a token: got HTTP %d, want 401", resp.StatusCode)
	}
}

// TestBadConfigFailsOnlyTheExtension: a wrong setting keeps the extension
// from loading, says why, and the daemon serves on.
func TestBadConfigFailsOnlyTheExtension(t *testing.T) {
	t.Parallel()
	target := func(name, url string, extra ...any) map[string]any {
		m := map[string]any{"name": name, "url": url, "secret": "s"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"bad URL", map[string]any{"targets": []any{target("ops", "ftp://ops.example/hook")}},
			`targets[0] (ops): url "ftp://ops.example/hook": want an http:// or https:// URL`},
		{"unknown event type", map[string]any{"targets": []any{target("ops", "https://ops.example", "events", []string{"node.exploded"})}},
			`targets[0] (ops): events[0] "node.exploded": unknown event type`},
		{"duplicate name", map[string]any{"targets": []any{target("ops", "https://a.example"), target("ops", "https://b.example")}},
			`targets[1]: name "ops" is already used by targets[0]`},
		{"unknown setting", map[string]any{"retries": 3},
			`unknown field "retries"`},
		{"no secret", map[string]any{"targets": []any{map[string]any{"name": "ops", "url": "https://ops.example"}}},
			`targets[0] (ops): secret (or secret_env): required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kit := start(t, tc.settings)
			exts := getJSON[map[string]struct {
				Status string `json:"status"`
			}](t, kit, "/api/v1/extensions")
			status := exts["webhook"].Status
			if !strings.HasPrefix(status, "failed: provision: ") || !strings.Contains(status, tc.want) {
				t.Errorf("webhook status: got %q, want failed: provision: ...%s", status, tc.want)
			}
			kit.RegisterMachine(t) // the daemon serves
			// (The host answers 503 "not running", or 404 where it does not
			// mount a router that failed to load.)
			if status, body := kit.Do(t, http.MethodGet, "/api/v1/webhook/targets", nil); status == http.StatusOK {
				t.Errorf("GET /targets of the failed extension: got HTTP %d %s, want an error", status, body)
			}
			if res := kit.CLI("webhook", "list"); res.Code == 0 {
				t.Errorf("webhook list: got exit 0, %q; want an error", res.Stdout)
			}
		})
	}
}

// TestSecretFromEnvironment reads a target's secret from the variable
// secret_env names when the daemon starts.
func TestSecretFromEnvironment(t *testing.T) {
	t.Setenv("WEBHOOK_TEST_OPS_SECRET", "from-the-environment")
	rc := newReceiver(t, "from-the-environment", nil)
	kit := start(t, map[string]any{"targets": []map[string]any{
		{"name": "ops", "url": rc.srv.URL, "secret_env": "WEBHOOK_TEST_OPS_SECRET"},
	}})
	kit.RegisterMachine(t)
	waitFor(t, "the event at the receiver", func() bool { return len(rc.requests()) >= 1 })
	if r := rc.requests()[0]; !r.SignatureOK {
		t.Errorf("signature %q does not verify with the secret from the environment", r.Header.Get("X-Attestation-Signature"))
	}

	bad := start(t, map[string]any{"targets": []map[string]any{
		{"name": "ops", "url": rc.srv.URL, "secret_env": "WEBHOOK_TEST_UNSET_SECRET"},
	}})
	exts := getJSON[map[string]struct {
		Status string `json:"status"`
	}](t, bad, "/api/v1/extensions")
	if want := "secret_env WEBHOOK_TEST_UNSET_SECRET: the variable is not set or empty"; !strings.Contains(exts["webhook"].Status, want) {
		t.Errorf("webhook status: got %q, want %q", exts["webhook"].Status, want)
	}
}

// TestPendingDeliverySurvivesRestart: a delivery still pending when the
// daemon stops is sent by the next daemon on the same data directory,
// under the same delivery ID.
func TestPendingDeliverySurvivesRestart(t *testing.T) {
	t.Parallel()
	var (
		mu sync.Mutex
		up bool
	)
	rc := newReceiver(t, "s", func(_ int, w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !up {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	settings := map[string]any{
		"targets":         []map[string]any{{"name": "ops", "url": rc.srv.URL, "secret": "s"}},
		"initial_backoff": "50ms",
		"max_backoff":     "200ms",
		"max_attempts":    1000,
	}
	dir := t.TempDir()
	first := startIn(t, dir, settings)
	first.RegisterMachine(t)
	var before webhook.Delivery
	waitFor(t, "a failed attempt", func() bool {
		ds := deliveries(t, first, "")
		if len(ds) == 1 {
			before = ds[0]
		}
		return before.Attempts > 0
	})
	first.Stop(t)
	// Only now can a request succeed: the first daemon is gone.
	mu.Lock()
	up = true
	mu.Unlock()

	second := startIn(t, dir, settings)
	var after webhook.Delivery
	waitFor(t, "the delivery after the restart", func() bool {
		ds := deliveries(t, second, "")
		if len(ds) == 1 {
			after = ds[0]
		}
		return after.Status == "delivered"
	})
	if after.ID != before.ID || after.Attempts <= before.Attempts {
		t.Errorf("after the restart: got delivery %s with %d attempts, want %s with more than %d", after.ID, after.Attempts, before.ID, before.Attempts)
	}
	last := rc.requests()[len(rc.requests())-1]
	if last.Header.Get("X-Attestation-Delivery") != before.ID || !last.SignatureOK || last.Event["event"] != "node.registered" {
		t.Errorf("delivered request: headers %v body %s, want the pending node.registered, signed", last.Header, last.Body)
	}
}

// TestNoTargets: without settings the extension runs and does nothing.
func TestNoTargets(t *testing.T) {
	t.Parallel()
	kit := extensiontest.Start(t, &webhook.Extension{})
	kit.RegisterMachine(t)
	exts := getJSON[map[string]struct {
		Status string `json:"status"`
	}](t, kit, "/api/v1/extensions")
	if exts["webhook"].Status != "running" {
		t.Errorf("webhook status: got %q, want running", exts["webhook"].Status)
	}
	if ts := getJSON[webhook.TargetList](t, kit, "/api/v1/webhook/targets").Targets; ts == nil || len(ts) != 0 {
		t.Errorf("targets: got %#v, want []", ts)
	}
	res := kit.CLI("webhook", "list")
	if res.Code != 0 || !strings.HasPrefix(res.Stdout, "NAME ") || strings.Count(res.Stdout, "\n") != 1 || res.Stderr != "no webhook targets\n" {
		t.Errorf("webhook list: got exit %d, stdout %q, stderr %q; want the header and \"no webhook targets\" on stderr", res.Code, res.Stdout, res.Stderr)
	}
	if res := kit.CLI("webhook", "list", "-o", "json"); res.Code != 0 || strings.TrimSpace(res.Stdout) != "[]" {
		t.Errorf("webhook list -o json: got exit %d, %q, want []", res.Code, res.Stdout)
	}
}
