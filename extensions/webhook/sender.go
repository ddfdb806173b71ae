package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Request headers of every delivery.
const (
	HeaderEvent     = "X-Attestation-Event"
	HeaderDelivery  = "X-Attestation-Delivery"
	HeaderAttempt   = "X-Attestation-Attempt"
	HeaderSignature = "X-Attestation-Signature"
)

// Sign returns the X-Attestation-Signature value of body: "sha256=" and
// the hex HMAC-SHA256 of the body with the target's secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether signature (the X-Attestation-Signature header)
// is the signature of body with secret. It compares in constant time.
func Verify(secret, body []byte, signature string) bool {
	got, ok := strings.CutPrefix(signature, "sha256=")
	if !ok {
		return false
	}
	sum, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(sum, mac.Sum(nil))
}

const (
	// pollInterval is how often a worker looks for due deliveries when
	// nothing woke it; enqueuing wakes it at once.
	pollInterval = 5 * time.Second
	// batchSize is how many due deliveries a worker reads at a time.
	batchSize = 32
	// maxResponseBody is how much of a response is read (and drained,
	// so that the connection can be reused).
	maxResponseBody = 64 << 10
	// maxErrorBody is how much of an error response is kept in the log.
	maxErrorBody = 200
	// pruneInterval is how often old deliveries are deleted.
	pruneInterval = time.Hour
)

// worker delivers one target's queue, one request at a time, so a dead
// or slow target delays only itself.
type worker struct {
	t      *target
	q      *queue
	log    *slog.Logger
	client *http.Client
	wake   chan struct{}

	maxAttempts                int
	initialBackoff, maxBackoff time.Duration
}

func newWorker(t *target, q *queue, log *slog.Logger, s *settings) *worker {
	return &worker{
		t:   t,
		q:   q,
		log: log.With("target", t.name),
		client: &http.Client{
			// Its own connections: a target that hangs holds only its own.
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// A redirect would turn the POST into a GET without the body.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		wake:           make(chan struct{}, 1),
		maxAttempts:    s.maxAttempts,
		initialBackoff: s.initialBackoff,
		maxBackoff:     s.maxBackoff,
	}
}

// notify wakes the worker; it never blocks.
func (w *worker) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run delivers until ctx ends.
func (w *worker) run(ctx context.Context) {
	for {
		wait := pollInterval
		// After a database error, wait for the poll: a delivery whose
		// outcome could not be recorded is still due, and would
		// otherwise be sent again at once, and again.
		if w.deliverDue(ctx) {
			if at, ok, err := w.q.nextDue(ctx, w.t.name); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Error("webhook queue", "err", err)
			} else if ok {
				wait = min(max(time.Until(at), 0), pollInterval)
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-w.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// deliverDue sends every delivery that is due, until none is left or ctx
// ends. It returns false when the database failed it.
func (w *worker) deliverDue(ctx context.Context) bool {
	for ctx.Err() == nil {
		batch, err := w.q.due(ctx, w.t.name, batchSize)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("webhook queue", "err", err)
			}
			return false
		}
		for _, d := range batch {
			if ctx.Err() != nil {
				return true
			}
			if err := w.deliver(ctx, d); err != nil {
				w.log.Error("webhook queue", "err", err)
				return false
			}
		}
		if len(batch) < batchSize {
			return true
		}
	}
	return true
}

// deliver makes one attempt at d and records its outcome; it fails only
// when the outcome could not be recorded.
func (w *worker) deliver(ctx context.Context, d delivery) error {
	n := d.Attempts + 1
	res := w.post(ctx, d.Payload, string(d.EventType), d.ID, n)
	if ctx.Err() != nil {
		// Stopping: the attempt was cut short, not refused. It stays
		// pending, uncounted, and is made again after the restart.
		return nil
	}
	log := w.log.With("event", d.EventType, "event_id", d.EventID, "machine", d.MachineID, "delivery", d.ID, "attempt", n)
	// The attempt was made: record it even if a stop comes meanwhile, or
	// it would be made again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if res.err == "" {
		if err := w.q.recordDelivered(ctx, d, n, res.attempt); err != nil {
			return err
		}
		log.Debug("webhook delivered", "status", res.statusCode, "latency", res.latency)
		return nil
	}
	var next time.Time
	if n < w.maxAttempts {
		next = w.q.now().Add(backoff(w.initialBackoff, w.maxBackoff, n))
	}
	if err := w.q.recordFailed(ctx, d, n, res.attempt, next); err != nil {
		return err
	}
	if next.IsZero() {
		log.Error("webhook delivery failed; giving up", "max_attempts", w.maxAttempts, "status", res.statusCode, "err", res.err)
		return nil
	}
	log.Warn("webhook delivery failed; will retry", "max_attempts", w.maxAttempts, "status", res.statusCode, "err", res.err,
		"retry_in", time.Until(next).Round(time.Millisecond))
	return nil
}

// result is what one POST came to.
type result struct {
	attempt
	latency time.Duration
}

// post sends body to the target, signed, under the target's timeout.
func (w *worker) post(ctx context.Context, body []byte, eventType, deliveryID string, attemptNo int) result {
	ctx, cancel := context.WithTimeout(ctx, w.t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.t.url, bytes.NewReader(body))
	if err != nil {
		return result{attempt: attempt{err: err.Error()}}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "attestation-webhook/"+version)
	req.Header.Set(HeaderEvent, eventType)
	req.Header.Set(HeaderDelivery, deliveryID)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attemptNo))
	req.Header.Set(HeaderSignature, Sign(w.t.secret, body))
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		res := result{latency: time.Since(start)}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			res.err = fmt.Sprintf("no response within %s", w.t.timeout)
		} else {
			res.err = transportError(err)
		}
		return res
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	res := result{attempt: attempt{statusCode: resp.StatusCode}, latency: time.Since(start)}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		res.err = "HTTP " + resp.Status
		if s := strings.Join(strings.Fields(string(head)), " "); s != "" {
			res.err += ": " + s
		}
	}
	return res
}

// transportError says why a request got no response, without the URL
// that net/http repeats (it may carry credentials).
func transportError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

// backoff is the wait after the n'th failed attempt: initial * 2^(n-1),
// capped at maxWait, less up to half of it at random so that deliveries
// failing together do not retry together.
func backoff(initial, maxWait time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	return d - rand.N(d/2+1)
}

// sender runs one worker per target and the pruning of old deliveries.
type sender struct {
	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	workers []*worker
}

// start runs the workers until stop; a second start is a no-op.
func (s *sender) start(ctx context.Context, q *queue, log *slog.Logger, retention time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return
	}
	// Not the caller's context: the workers live until stop.
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.done = make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range s.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Go(func() { prune(ctx, q, log, retention) })
	go func(done chan struct{}) { wg.Wait(); close(done) }(s.done)
}

// stop ends the workers, cutting short requests in flight, and waits for
// them until ctx ends; stopping a stopped sender is a no-op.
func (s *sender) stop(ctx context.Context) error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done = nil, nil
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop webhook workers: %w", ctx.Err())
	}
}

// prune deletes deliveries older than retention, at start and then
// every pruneInterval.
func prune(ctx context.Context, q *queue, log *slog.Logger, retention time.Duration) {
	for {
		n, err := q.prune(ctx, time.Now().Add(-retention))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("webhook queue", "err", err)
		case n > 0:
			log.Info("pruned old webhook deliveries", "count", n, "retention", retention)
		}
		t := time.NewTimer(pruneInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
