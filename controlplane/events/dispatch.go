package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source is the outbox as the dispatcher sees it (package store).
type Source interface {
	// EventsAfter returns up to limit events with seq > after, in order.
	EventsAfter(ctx context.Context, after int64, limit int) ([]Envelope, error)
	// Cursor returns how far subscriber has been delivered.
	Cursor(ctx context.Context, subscriber string) (int64, error)
	// SetCursor records delivery up to seq.
	SetCursor(ctx context.Context, subscriber string, seq int64) error
	// RecordFailure notes a delivery the subscriber gave up on.
	RecordFailure(ctx context.Context, subscriber string, seq int64, attempts int, err error) error
}

// Handler handles one event. Returning an error asks for a retry.
type Handler func(ctx context.Context, ev Envelope) error

// Subscription is a named consumer of events. The name keys its delivery
// cursor, so it must stay the same across restarts.
type Subscription struct {
	Name string
	// Types the handler wants; empty means every type.
	Types []Type
	// Handle is called once per event, at least once.
	Handle Handler
	// Timeout bounds each call; zero means the dispatcher's default.
	Timeout time.Duration
}

func (s *Subscription) wants(t Type) bool {
	if len(s.Types) == 0 {
		return true
	}
	for _, w := range s.Types {
		if w == t {
			return true
		}
	}
	return false
}

// Options tune the dispatcher; zero values take the defaults.
type Options struct {
	// Timeout bounds each handler call (default 10 s).
	Timeout time.Duration
	// MaxAttempts is how often a failing delivery is tried before it is
	// recorded as failed and skipped (default 5).
	MaxAttempts int
	// RetryBackoff is the first wait between attempts, doubled each time
	// up to 30 s (default 500 ms).
	RetryBackoff time.Duration
	// Poll is how often the outbox is read when nothing wakes the
	// dispatcher (default 1 s).
	Poll   time.Duration
	Logger *slog.Logger
	// Registerer receives the delivery metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Dispatcher delivers outbox events to subscribers: at least once, in
// commit order per subscriber (so in order per machine), every subscriber
// in its own goroutine, every call under its own timeout, panics recovered.
// A slow or failing subscriber delays only itself.
type Dispatcher struct {
	src  Source
	opts Options
	log  *slog.Logger
	wake Signal

	mu      sync.Mutex
	subs    []*Subscription
	running bool

	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// NewDispatcher returns a dispatcher reading from src.
func NewDispatcher(src Source, opts Options) *Dispatcher {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 500 * time.Millisecond
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		src:  src,
		opts: opts,
		log:  opts.Logger,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestation_event_deliveries_total",
			Help: "Event handler calls by subscriber and result (ok, error, panic, timeout, gave_up).",
		}, []string{"subscriber", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "attestation_event_handler_duration_seconds",
			Help:    "Time spent in event handlers by subscriber.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"subscriber"}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(d.deliveries, d.duration)
	}
	return d
}

// Subscribe adds a subscription. It must be called before Run.
func (d *Dispatcher) Subscribe(s Subscription) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running {
		return fmt.Errorf("subscribe %q: dispatcher already running", s.Name)
	}
	if s.Name == "" || s.Handle == nil {
		return errors.New("subscribe: a subscription needs a name and a handler")
	}
	for _, o := range d.subs {
		if o.Name == s.Name {
			return fmt.Errorf("subscribe %q: name already taken", s.Name)
		}
	}
	for _, t := range s.Types {
		if !t.Valid() {
			return fmt.Errorf("subscribe %q: unknown event type %q", s.Name, t)
		}
	}
	d.subs = append(d.subs, &s)
	return nil
}

// Subscribers lists the subscription names.
func (d *Dispatcher) Subscribers() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, s := range d.subs {
		out = append(out, s.Name)
	}
	return out
}

// Notify wakes the dispatcher after a commit. It never blocks.
func (d *Dispatcher) Notify() { d.wake.Notify() }

// Run delivers events until ctx is done, then returns nil.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	d.running = true
	subs := append([]*Subscription(nil), d.subs...)
	d.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.loop(ctx, s)
		}()
	}
	wg.Wait()
	return nil
}

const batchSize = 256

func (d *Dispatcher) loop(ctx context.Context, s *Subscription) {
	log := d.log.With("subscriber", s.Name)
	var cursor int64
	for {
		c, err := d.src.Cursor(ctx, s.Name)
		if err == nil {
			cursor = c
			break
		}
		if ctx.Err() != nil {
			return
		}
		log.Error("read event cursor; retrying", "err", err)
		if !sleep(ctx, d.opts.Poll) {
			return
		}
	}
	log.Debug("event subscriber started", "cursor", cursor)
	for {
		woken := d.wake.C()
		batch, err := d.src.EventsAfter(ctx, cursor, batchSize)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("read outbox", "err", err)
			if !sleep(ctx, d.opts.Poll) {
				return
			}
			continue
		}
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-woken:
			case <-time.After(d.opts.Poll):
			}
			continue
		}
		for _, ev := range batch {
			if s.wants(ev.Type) {
				if !d.deliver(ctx, log, s, ev) {
					// Shutting down: what was not acknowledged is delivered again
					// after the restart.
					d.saveCursor(log, s, cursor)
					return
				}
			}
			cursor = ev.Seq
		}
		d.saveCursor(log, s, cursor)
	}
}

func (d *Dispatcher) saveCursor(log *slog.Logger, s *Subscription, seq int64) {
	// The cursor is saved even while shutting down, so use a fresh context.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.src.SetCursor(ctx, s.Name, seq); err != nil {
		log.Error("save event cursor; events after it will be delivered again", "seq", seq, "err", err)
	}
}

// deliver calls the handler until it succeeds or MaxAttempts is reached.
// It returns false only when ctx ended first.
func (d *Dispatcher) deliver(ctx context.Context, log *slog.Logger, s *Subscription, ev Envelope) bool {
	backoff := d.opts.RetryBackoff
	var err error
	for attempt := 1; attempt <= d.opts.MaxAttempts; attempt++ {
		var result string
		result, err = d.call(ctx, s, ev)
		d.deliveries.WithLabelValues(s.Name, result).Inc()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Warn("event handler failed", "event", ev.Type, "seq", ev.Seq, "machine", ev.MachineID,
			"attempt", attempt, "result", result, "err", err)
		if attempt < d.opts.MaxAttempts && !sleep(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	d.deliveries.WithLabelValues(s.Name, "gave_up").Inc()
	log.Error("event delivery failed; giving up", "event", ev.Type, "seq", ev.Seq, "machine", ev.MachineID,
		"attempts", d.opts.MaxAttempts, "err", err)
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rerr := d.src.RecordFailure(rctx, s.Name, ev.Seq, d.opts.MaxAttempts, err); rerr != nil {
		log.Error("record failed delivery", "seq", ev.Seq, "err", rerr)
	}
	return true
}

// call runs the handler once in its own goroutine under the timeout. A
// handler that ignores its context is abandoned when the timeout passes.
func (d *Dispatcher) call(ctx context.Context, s *Subscription, ev Envelope) (result string, err error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = d.opts.Timeout
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type outcome struct {
		err      error
		panicked bool
	}
	done := make(chan outcome, 1)
	start := time.Now()
	go func() {
		defer func() {
			if p := recover(); p != nil {
				d.log.Error("event handler panicked", "subscriber", s.Name, "event", ev.Type, "seq", ev.Seq,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				done <- outcome{err: fmt.Errorf("handler panicked: %v", p), panicked: true}
			}
		}()
		done <- outcome{err: s.Handle(hctx, ev)}
	}()
	select {
	case o := <-done:
		d.duration.WithLabelValues(s.Name).Observe(time.Since(start).Seconds())
		switch {
		case o.panicked:
			return "panic", o.err
		case o.err != nil && errors.Is(hctx.Err(), context.DeadlineExceeded):
			return "timeout", fmt.Errorf("handler timed out after %s: %w", timeout, o.err)
		case o.err != nil:
			return "error", o.err
		}
		return "ok", nil
	case <-hctx.Done():
		d.duration.WithLabelValues(s.Name).Observe(time.Since(start).Seconds())
		if ctx.Err() != nil {
			return "canceled", ctx.Err()
		}
		return "timeout", fmt.Errorf("handler did not return within %s", timeout)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Signal is a broadcast wake-up: every receiver of C before a Notify sees
// its channel closed.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// C returns a channel closed by the next Notify.
func (s *Signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes everyone waiting on C.
func (s *Signal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
