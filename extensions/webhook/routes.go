package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/attestation/attestation/extensions"
)

// TestEvent is the event type of the synthetic payload that
// POST /targets/{name}/test sends.
const TestEvent = "webhook.test"

// Limits of GET /deliveries.
const (
	defaultListLimit = 50
	maxListLimit     = 1000
)

// Target is a target as GET /targets shows it: never its secret.
type Target struct {
	Name string `json:"name"`
	// URL has any password in it masked.
	URL string `json:"url"`
	// Events the target takes; empty means every event.
	Events  []string `json:"events"`
	Timeout string   `json:"timeout"`
	// Deliveries in each state.
	Pending   int `json:"pending"`
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
}

// TargetList is the body of GET /targets.
type TargetList struct {
	Targets []Target `json:"targets"`
}

// Delivery is one entry of the delivery log.
type Delivery struct {
	ID        string `json:"id"`
	Target    string `json:"target"`
	EventID   string `json:"event_id"`
	EventType string `json:"event_type"`
	Seq       int64  `json:"seq"`
	MachineID string `json:"machine_id"`
	// Status is pending, delivered or failed.
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	// NextAttemptAt is set while the delivery is pending.
	NextAttemptAt  *time.Time `json:"next_attempt_at,omitempty"`
	LastStatusCode int        `json:"last_status_code"`
	LastError      string     `json:"last_error"`
	CreatedAt      time.Time  `json:"created_at"`
	DeliveredAt    *time.Time `json:"delivered_at,omitempty"`
}

// DeliveryList is the body of GET /deliveries.
type DeliveryList struct {
	Deliveries []Delivery `json:"deliveries"`
}

// TestResult is the body of POST /targets/{name}/test.
type TestResult struct {
	Target     string  `json:"target"`
	URL        string  `json:"url"`
	DeliveryID string  `json:"delivery_id"`
	Delivered  bool    `json:"delivered"`
	StatusCode int     `json:"status_code"`
	LatencyMS  float64 `json:"latency_ms"`
	Error      string  `json:"error"`
}

// api serves the extension's routes.
type api struct{ ext *Extension }

func (a *api) targets(w http.ResponseWriter, r *http.Request) {
	if !onlyParams(w, r) {
		return
	}
	counts, err := a.ext.queue.counts(r.Context())
	if err != nil {
		a.internal(w, r, err)
		return
	}
	out := TargetList{Targets: []Target{}}
	for _, t := range a.ext.settings.targets {
		evs := make([]string, 0, len(t.events))
		for _, e := range t.events {
			evs = append(evs, string(e))
		}
		c := counts[t.name]
		out.Targets = append(out.Targets, Target{
			Name: t.name, URL: t.displayURL(), Events: evs, Timeout: t.timeout.String(),
			Pending: c[statusPending], Delivered: c[statusDelivered], Failed: c[statusFailed],
		})
	}
	sort.Slice(out.Targets, func(i, j int) bool { return out.Targets[i].Name < out.Targets[j].Name })
	writeJSON(w, http.StatusOK, out)
}

func (a *api) deliveries(w http.ResponseWriter, r *http.Request) {
	if !onlyParams(w, r, "target", "status", "limit") {
		return
	}
	q := r.URL.Query()
	f := listFilter{Target: q.Get("target"), Status: q.Get("status"), Limit: defaultListLimit}
	switch f.Status {
	case "", statusPending, statusDelivered, statusFailed:
	default:
		badRequest(w, fmt.Sprintf("status %q: want pending, delivered or failed", f.Status))
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxListLimit {
			badRequest(w, fmt.Sprintf("limit %q: want a number from 1 to %d", s, maxListLimit))
			return
		}
		f.Limit = n
	}
	ds, err := a.ext.queue.list(r.Context(), f)
	if err != nil {
		a.internal(w, r, err)
		return
	}
	out := DeliveryList{Deliveries: make([]Delivery, 0, len(ds))}
	for _, d := range ds {
		j := Delivery{
			ID: d.ID, Target: d.Target, EventID: d.EventID, EventType: string(d.EventType), Seq: d.Seq,
			MachineID: d.MachineID, Status: d.Status, Attempts: d.Attempts,
			LastStatusCode: d.LastStatusCode, LastError: d.LastError, CreatedAt: d.CreatedAt,
		}
		if d.Status == statusPending {
			j.NextAttemptAt = &d.NextAttemptAt
		}
		if !d.DeliveredAt.IsZero() {
			j.DeliveredAt = &d.DeliveredAt
		}
		out.Deliveries = append(out.Deliveries, j)
	}
	writeJSON(w, http.StatusOK, out)
}

// test sends a synthetic event to a target now, signed like every
// delivery, and reports how it went. It is not queued or retried.
func (a *api) test(w http.ResponseWriter, r *http.Request) {
	if !onlyParams(w, r) {
		return
	}
	targetName := r.PathValue("name")
	wk, ok := a.ext.workers[targetName]
	if !ok {
		extensions.WriteError(w, http.StatusNotFound, fmt.Sprintf("no webhook target named %q", targetName))
		return
	}
	id := uuid.NewString()
	body, err := json.Marshal(map[string]any{
		"event":        TestEvent,
		"id":           id,
		"target":       targetName,
		"timestamp":    time.Now().UTC(),
		"requested_by": extensions.Caller(r.Context()),
	})
	if err != nil {
		a.internal(w, r, err)
		return
	}
	res := wk.post(r.Context(), body, TestEvent, id, 1)
	out := TestResult{
		Target: targetName, URL: wk.t.displayURL(), DeliveryID: id, Delivered: res.err == "",
		StatusCode: res.statusCode, LatencyMS: float64(res.latency.Microseconds()) / 1000, Error: res.err,
	}
	wk.log.Info("webhook test sent", "by", extensions.Caller(r.Context()), "delivered", out.Delivered,
		"status", res.statusCode, "err", res.err)
	writeJSON(w, http.StatusOK, out)
}

// internalMessage is all a caller learns of an internal error, as from
// the core API.
const internalMessage = "internal error; see the daemon's log"

// internal logs err and answers without its details.
func (a *api) internal(w http.ResponseWriter, r *http.Request, err error) {
	a.ext.host.Logger.Error("webhook API", "method", r.Method, "path", r.URL.Path, "err", err)
	extensions.WriteError(w, http.StatusInternalServerError, internalMessage)
}

// onlyParams answers 400 and returns false when the query has a parameter
// not in allowed.
func onlyParams(w http.ResponseWriter, r *http.Request, allowed ...string) bool {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		badRequest(w, fmt.Sprintf("query: %v", err))
		return false
	}
next:
	for k := range q {
		for _, a := range allowed {
			if k == a {
				continue next
			}
		}
		if len(allowed) == 0 {
			badRequest(w, fmt.Sprintf("unknown query parameter %q: this route takes none", k))
		} else {
			badRequest(w, fmt.Sprintf("unknown query parameter %q (want %v)", k, allowed))
		}
		return false
	}
	return true
}

func badRequest(w http.ResponseWriter, msg string) {
	extensions.WriteError(w, http.StatusBadRequest, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		extensions.WriteError(w, http.StatusInternalServerError, internalMessage)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
