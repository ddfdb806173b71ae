// Package webhook is the webhook extension: it POSTs lifecycle events
// (node.registered, node.provisioned, node.decommissioned, ...) to HTTP
// endpoints, each request signed with the endpoint's secret, and retries
// with backoff until the endpoint takes it.
//
// # Configuration
//
// Targets are set in the daemon's config file:
//
//	extensions:
//	  webhook:
//	    targets:
//	      - name: ops                          # letters, digits, . _ -
//	        url: https://ops.example/hooks/attestation
//	        secret: "a long random string"     # or secret_env: WEBHOOK_OPS_SECRET
//	        events: [node.provisioned, node.decommissioned]  # empty or left out: all
//	        timeout: 5s                        # per request (default 10s)
//	        include_config_url: false          # see below (default false)
//	    max_attempts: 8        # per delivery, then it is marked failed (default 8)
//	    initial_backoff: 1s    # wait after the first failure, doubled each time (default 1s)
//	    max_backoff: 1h        # the longest wait between attempts (default 1h)
//	    retention: 720h        # deliveries older than this leave the log (default 30 days)
//
// A setting that is unknown or wrong (a URL that is not http(s), an
// unknown event type, a name used twice, a missing secret, a secret_env
// variable that is not set) keeps the extension from loading: the daemon
// runs on and GET /api/v1/extensions says why. secret_env is read when
// the daemon starts.
//
// node.provisioned carries config_token_id, a reference to the machine's
// one-time config URL; the URL itself (config_url) is a bearer secret, and
// goes only to targets with include_config_url: true, a receiver that
// provisions the machine. Whoever fetches it first gets the machine's
// config, and the machine gets nothing.
//
// # Delivery
//
// The extension's event handler does not send anything: it writes one
// delivery per event and matching target into its table
// (extension_webhook_deliveries) and returns, so a dead receiver never
// holds up the daemon's event dispatch. A worker per target sends that
// target's due deliveries one at a time, so a slow or dead target delays
// only itself. Each request is
//
//	POST <url>
//	Content-Type: application/json
//	X-Attestation-Event: node.provisioned
//	X-Attestation-Delivery: <delivery id, the same on every attempt>
//	X-Attestation-Attempt: <1, 2, ...>
//	X-Attestation-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the secret>
//
//	{"event":"node.provisioned","id":"<event id>","machine_id":"...","ek_fingerprint":"...","timestamp":"...",
//	 "actor":{"subject":"...","name":"..."},...}
//
// The body is the event's payload exactly as the daemon stored it; actor
// names the operator whose action wrote the event, and is left out of an
// agent's or the daemon's own events (node.online, node.heartbeat_missed,
// ...). A 2xx
// response delivers it; anything else (including a redirect, which is not
// followed) or no response within the timeout is retried after
// initial_backoff * 2^(n-1), capped at max_backoff, less up to half of it
// at random, until max_attempts, after which the delivery is failed.
// Deliveries are kept in the database, so pending ones are sent after a
// restart; events committed before the extension first ran are not sent.
// Delivery is at least once: the same event can arrive twice (when the
// daemon stops or crashes between a POST and the record of its answer),
// so receivers should drop an event "id" they have already handled.
// Events to one target may arrive out of order when an earlier one is
// retried; order them by "timestamp".
//
// A test (POST /targets/{name}/test) sends the body
// {"event":"webhook.test","id":"...","target":"<name>","timestamp":"...","requested_by":"<caller>"}
// with the same headers and signature, once, and is not logged as a
// delivery.
//
// # Verifying a delivery
//
// Only the body is signed, so read it whole before parsing it, and
// compare in constant time; the event id and timestamp in the (signed)
// body are what to use against replays, not the unsigned headers:
//
//	func handle(w http.ResponseWriter, r *http.Request) {
//		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
//		if err != nil {
//			http.Error(w, "read body", http.StatusBadRequest)
//			return
//		}
//		mac := hmac.New(sha256.New, []byte(secret))
//		mac.Write(body)
//		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
//		if !hmac.Equal([]byte(r.Header.Get("X-Attestation-Signature")), []byte(want)) {
//			http.Error(w, "bad signature", http.StatusUnauthorized)
//			return
//		}
//		var ev struct {
//			Event     string    `json:"event"`
//			ID        string    `json:"id"`
//			MachineID string    `json:"machine_id"`
//			Timestamp time.Time `json:"timestamp"`
//		}
//		if err := json.Unmarshal(body, &ev); err != nil {
//			http.Error(w, "bad body", http.StatusBadRequest)
//			return
//		}
//		// Drop ev.ID if seen before; handle the event; then answer 2xx.
//		w.WriteHeader(http.StatusNoContent)
//	}
//
// (Verify in this package does the same for Go receivers.)
//
// # API and CLI
//
// Behind the daemon's operator authentication:
//
//	GET  /api/v1/webhook/targets                 targets (never their secrets) with counts by state
//	GET  /api/v1/webhook/deliveries?target=&status=&limit=   the delivery log, newest first
//	POST /api/v1/webhook/targets/{name}/test     send a signed webhook.test event now, report the outcome
//
// and on the command line: attestation webhook list, attestation webhook
// deliveries [--target NAME] [--status S] [--limit N], attestation webhook
// test NAME.
//
// # Files
//
// webhook.go registers the extension and ties it to the host (Provision,
// the event handler, Start, Stop); config.go reads the settings; queue.go
// is the deliveries table; sender.go signs, sends and retries, one worker
// per target; routes.go is the API; commands.go the CLI. The binaries are
// built with it by one blank import in package extensions/all:
//
//	import _ "github.com/attestation/attestation/extensions/webhook"
package webhook

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/extensions"
)

const (
	name    = "webhook"
	version = "1.0.0"
)

func init() {
	extensions.Register(&Extension{})
}

// Extension is the webhook extension; its zero value is ready to be
// provisioned.
type Extension struct {
	host     *extensions.Host
	settings *settings
	queue    *queue
	workers  map[string]*worker // by target name
	sender   sender
}

var (
	_ extensions.Provisioner  = (*Extension)(nil)
	_ extensions.Migrator     = (*Extension)(nil)
	_ extensions.EventHandler = (*Extension)(nil)
	_ extensions.Router       = (*Extension)(nil)
	_ extensions.Starter      = (*Extension)(nil)
	_ extensions.Stopper      = (*Extension)(nil)
	_ extensions.Commander    = (*Extension)(nil)
)

// Info implements extensions.Extension.
func (*Extension) Info() extensions.Info {
	return extensions.Info{
		Name:        name,
		Version:     version,
		Description: "POSTs lifecycle events to HTTP endpoints, signed (HMAC-SHA256) and retried until taken",
	}
}

// Provision reads the settings and prepares a worker per target.
func (e *Extension) Provision(_ context.Context, host *extensions.Host) error {
	s, err := parseConfig(host.Config, os.LookupEnv)
	if err != nil {
		return err
	}
	e.host, e.settings = host, s
	e.queue = &queue{db: host.DB, now: time.Now}
	e.workers = map[string]*worker{}
	e.sender.workers = nil
	for _, t := range s.targets {
		w := newWorker(t, e.queue, host.Logger, s)
		e.workers[t.name] = w
		e.sender.workers = append(e.sender.workers, w)
	}
	if len(s.targets) == 0 {
		host.Logger.Info("no webhook targets configured (extensions: webhook: targets: in the config file)")
	}
	return nil
}

//go:embed migrations/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Migrations implements extensions.Migrator.
func (*Extension) Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists: a build error
	}
	return sub
}

// HandleEvents subscribes to every event; each target's filter is
// applied when the event is queued. When a target takes config URLs, the
// subscription asks for them, and enqueue strips them for the rest.
func (e *Extension) HandleEvents(h *extensions.Handlers) {
	if e.settings != nil && slices.ContainsFunc(e.settings.targets, func(t *target) bool { return t.configURL }) {
		h.WithConfigURLs()
	}
	h.Subscribe("deliver", nil, e.enqueue)
}

// enqueue queues env for every target that wants it and wakes their
// workers. It never sends: that is the workers' job.
func (e *Extension) enqueue(ctx context.Context, env events.Envelope) error {
	if e.settings == nil {
		return errors.New("webhook extension not provisioned")
	}
	var want []*target
	for _, t := range e.settings.targets {
		if t.wants(env.Type) {
			want = append(want, t)
		}
	}
	if len(want) == 0 {
		return nil
	}
	// Targets that did not ask for config URLs get the event without.
	stripped, hadURL := withoutConfigURL(env)
	var asked, others []*target
	for _, t := range want {
		if t.configURL || !hadURL {
			asked = append(asked, t)
		} else {
			others = append(others, t)
		}
	}
	var added []*target
	for _, batch := range []struct {
		env     events.Envelope
		targets []*target
	}{{env, asked}, {stripped, others}} {
		if len(batch.targets) == 0 {
			continue
		}
		a, err := e.queue.enqueue(ctx, batch.env, batch.targets)
		if err != nil {
			return err
		}
		added = append(added, a...)
	}
	for _, t := range added {
		e.workers[t.name].notify()
	}
	return nil
}

// Start starts the workers; starting twice is a no-op.
func (e *Extension) Start(ctx context.Context) error {
	if e.settings == nil {
		return errors.New("webhook extension not provisioned")
	}
	e.sender.start(ctx, e.queue, e.host.Logger, e.settings.retention)
	return nil
}

// Stop stops the workers, cutting short requests in flight (they are
// made again after a restart); stopping twice, or without a start, is a
// no-op.
func (e *Extension) Stop(ctx context.Context) error {
	return e.sender.stop(ctx)
}

// Routes implements extensions.Router.
func (e *Extension) Routes(mux *http.ServeMux) {
	api := &api{ext: e}
	mux.Handle("GET /targets", extensions.Require(extensions.Viewer, http.HandlerFunc(api.targets)))
	mux.Handle("GET /deliveries", extensions.Require(extensions.Viewer, http.HandlerFunc(api.deliveries)))
	// Sends a request to a site's endpoint: an admin's call.
	mux.Handle("POST /targets/{name}/test", extensions.Require(extensions.Admin, http.HandlerFunc(api.test)))
}

// withoutConfigURL returns env without the config_url of a node.provisioned
// payload, and whether it had one to remove.
func withoutConfigURL(env events.Envelope) (events.Envelope, bool) {
	if env.Type != events.TypeProvisioned {
		return env, false
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(env.Payload, &fields) != nil {
		return env, false
	}
	if _, ok := fields["config_url"]; !ok {
		return env, false
	}
	delete(fields, "config_url")
	b, err := json.Marshal(fields)
	if err != nil {
		return env, false
	}
	env.Payload = b
	return env, true
}
