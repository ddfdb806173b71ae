package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source is the outbox as the dispatcher sees it (package store).
type Source interface {
	// EventsAfter returns up to limit events with seq > after, in order.
	EventsAfter(ctx context.Context, after int64, limit int) ([]Envelope, error)
	// Cursor returns how far subscriber has been delivered; a new
	// subscriber's cursor is recorded (at the newest event), so reading it
	// again returns it.
	Cursor(ctx context.Context, subscriber string) (int64, error)
	// SetCursor records delivery up to seq.
	SetCursor(ctx context.Context, subscriber string, seq int64) error
	// RecordFailure notes a delivery the subscriber gave up on.
	RecordFailure(ctx context.Context, subscriber string, seq int64, attempts int, err error) error
}

// Handler handles one event. Returning an error asks for a retry. It must
// heed ctx: a handler still running at its timeout is abandoned, and the
// next event can then reach the same subscriber while it still runs.
type Handler func(ctx context.Context, ev Envelope) error

// Subscription is a named consumer of events. The name keys its delivery
// cursor, so it must stay the same across restarts.
type Subscription struct {
	Name string
	// Types the handler wants; empty means every type.
	Types []Type
	// Handle is called once per event, at least once: after a crash or a
	// timeout the same event (same ID) can come again.
	Handle Handler
	// Timeout bounds each call; zero means the dispatcher's default.
	Timeout time.Duration
	// ConfigURLs asks for node.provisioned with its one-time config URL
	// (config_url), a bearer secret: only for handlers that hand it to the
	// machine's own provisioning, never to a log or a third party.
	ConfigURLs bool
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

// On returns a subscription to one event type whose handler gets the typed
// payload, decoded, with its Common fields filled:
//
//	events.On("audit", func(ctx context.Context, ev events.Online) error { ... })
func On[E any, P interface {
	*E
	Event
}](name string, fn func(context.Context, E) error) Subscription {
	t := TypeOf(P(new(E)))
	return Subscription{
		Name:  name,
		Types: []Type{t},
		Handle: func(ctx context.Context, env Envelope) error {
			ev, err := env.Decode()
			if err != nil {
				return err
			}
			p, ok := ev.(P)
			if !ok {
				return fmt.Errorf("event %d: got a %T payload, want %T", env.Seq, ev, p)
			}
			return fn(ctx, *p)
		},
	}
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
	Poll time.Duration
	// CursorInterval is how often, at most, a subscriber's cursor is
	// written (default 1 s); the first delivery after a quiet spell is
	// written at once. Every cursor write is a durable commit that waits
	// for the database's one writer beside the API's, so writing one per
	// event would add a commit per event and subscriber. Cursors are
	// written beside delivery, never in its way, and always when the
	// dispatcher stops; after a crash, what was delivered in the last
	// interval is delivered again, which at-least-once delivery allows.
	CursorInterval time.Duration
	Logger         *slog.Logger
	// ConfigURL turns a node.provisioned event's config_token_id into its
	// config URL, for subscriptions with ConfigURLs ("" when it cannot).
	ConfigURL func(tokenID string) string
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
	// recent are the events Committed handed in; notified counts the bare
	// Notify calls, each a commit whose events are in the outbox only.
	recent   recent
	notified atomic.Int64

	mu      sync.Mutex
	subs    []*subscriber
	running bool

	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	abandoned  *prometheus.GaugeVec
}

// subscriber is a subscription and whether Prepare recorded its cursor.
type subscriber struct {
	Subscription
	prepared bool
}

// Delivery results, as counted in attestation_event_deliveries_total.
const (
	resultOK       = "ok"
	resultError    = "error"
	resultPanic    = "panic"
	resultTimeout  = "timeout"
	resultCanceled = "canceled"
	resultGaveUp   = "gave_up"
)

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
	if opts.CursorInterval <= 0 {
		opts.CursorInterval = time.Second
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
			Help: "Event handler calls by subscriber and result (ok, error, panic, timeout, canceled by shutdown), " +
				"and deliveries given up after the last attempt (gave_up).",
		}, []string{"subscriber", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "attestation_event_handler_duration_seconds",
			Help:    "Time spent in event handlers by subscriber.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"subscriber"}),
		abandoned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "attestation_event_handlers_abandoned",
			Help: "Handler calls still running after their timeout or the shutdown, by subscriber: handlers that ignore their context.",
		}, []string{"subscriber"}),
	}
	if r := opts.Registerer; r != nil {
		d.deliveries = register(r, d.log, d.deliveries)
		d.duration = register(r, d.log, d.duration)
		d.abandoned = register(r, d.log, d.abandoned)
	}
	return d
}

// register registers c, or returns the equal collector already registered
// (a second dispatcher on the same registry shares the metrics).
func register[C prometheus.Collector](r prometheus.Registerer, log *slog.Logger, c C) C {
	err := r.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	log.Error("register event metrics; they will not be exported", "err", err)
	return c
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
	s.Types = append([]Type(nil), s.Types...)
	d.subs = append(d.subs, &subscriber{Subscription: s})
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

// Prepare reads every subscription's cursor; the cursor of a subscription
// seen for the first time is created at the newest event. Call it after
// Subscribe and before the API accepts changes: a new subscriber then gets
// every event committed after Prepare returns. Run calls it for the
// subscriptions it was not called for, but by then the API may have
// committed events that a new subscriber will never see.
func (d *Dispatcher) Prepare(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.subs {
		if s.prepared {
			continue
		}
		if _, err := d.src.Cursor(ctx, s.Name); err != nil {
			return fmt.Errorf("read event cursor of %s: %w", s.Name, err)
		}
		s.prepared = true
	}
	return nil
}

// Notify wakes the dispatcher after a commit, to read its events from the
// outbox. It never blocks.
func (d *Dispatcher) Notify() {
	d.notified.Add(1)
	d.wake.Notify()
}

// Committed wakes the dispatcher after a commit with the events it wrote,
// as the store returned them (store.Update); a subscriber that has
// delivered every event before them takes them from memory rather than
// from the outbox. It never blocks.
func (d *Dispatcher) Committed(evs []Envelope) {
	if len(evs) == 0 {
		return
	}
	d.recent.add(evs)
	d.wake.Notify()
}

// Run delivers events until ctx is done, then returns nil once every
// subscriber has saved its cursor. It does not wait for handlers that
// ignore their context. Run may be called again once it has returned: it
// starts from the cursors saved then, by this dispatcher or by another
// over the same database that delivered meanwhile (instances take turns:
// the one that leads the lease events-dispatch runs).
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.running {
		d.mu.Unlock()
		return errors.New("run event dispatcher: already running")
	}
	d.running = true
	subs := append([]*subscriber(nil), d.subs...)
	d.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(func() { d.loop(ctx, s) })
	}
	wg.Wait()
	d.mu.Lock()
	d.running = false
	d.mu.Unlock()
	return nil
}

const batchSize = 256

// start returns the cursor to deliver after, the source's: the one
// Prepare recorded, or one saved since (by another dispatcher over the
// same database that led meanwhile), retried until ctx ends.
func (d *Dispatcher) start(ctx context.Context, log *slog.Logger, s *subscriber) (int64, bool) {
	for {
		c, err := d.src.Cursor(ctx, s.Name)
		if err == nil {
			return c, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		log.Error("read event cursor; retrying", "err", err)
		if !sleep(ctx, d.opts.Poll) {
			return 0, false
		}
	}
}

func (d *Dispatcher) loop(ctx context.Context, s *subscriber) {
	log := d.log.With("subscriber", s.Name)
	cursor, ok := d.start(ctx, log, s)
	if !ok {
		return
	}
	log.Debug("event subscriber started", "cursor", cursor)

	// cursor is the last event delivered (or skipped: not wanted, or given
	// up on); it never passes an event still to be delivered, so saving it
	// at any time is right. A saver goroutine writes it, so that delivery
	// never waits for the database's one writer, busy with the API.
	var delivered atomic.Int64
	delivered.Store(cursor)
	kick := make(chan struct{}, 1)
	saverCtx, stopSaver := context.WithCancel(context.Background())
	saved := make(chan int64, 1)
	go func(start int64) { saved <- d.saver(saverCtx, log, s, &delivered, start, kick) }(cursor)
	defer func() {
		stopSaver()
		if last, seq := <-saved, delivered.Load(); seq > last {
			d.saveCursor(log, s, seq)
		}
	}()

	// read says the outbox may hold events after cursor that are not in
	// d.recent: at the start, after a full batch, a bare Notify (seen is
	// the count of them at the last read), and at every poll.
	read, seen := true, int64(0)
	for {
		// Take the wake-up channel before looking: a commit after the
		// look closes it, so its Notify cannot be lost.
		woken := d.wake.C()
		if n := d.notified.Load(); n != seen {
			read, seen = true, n
		}
		batch, ahead := d.recent.after(cursor, batchSize)
		if len(batch) == 0 && (read || ahead) {
			var err error
			if batch, err = d.src.EventsAfter(ctx, cursor, batchSize); err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Error("read outbox", "err", err)
				if !sleep(ctx, d.opts.Poll) {
					return
				}
				continue
			}
			read = len(batch) == batchSize
		}
		if len(batch) == 0 {
			poll := time.NewTimer(d.opts.Poll)
			select {
			case <-ctx.Done():
				poll.Stop()
				return
			case <-woken:
			case <-poll.C:
				read = true
			}
			poll.Stop()
			continue
		}
		for _, ev := range batch {
			if s.wants(ev.Type) && !d.deliver(ctx, log, s, ev) {
				// Shutting down: ev was not acknowledged and is delivered
				// again after the restart.
				return
			}
			cursor = ev.Seq
			delivered.Store(cursor)
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
}

// saver writes the delivered cursor when kicked, at most once per
// CursorInterval, until ctx ends; it returns the last cursor it saved.
func (d *Dispatcher) saver(ctx context.Context, log *slog.Logger, s *subscriber, delivered *atomic.Int64, saved int64, kick <-chan struct{}) int64 {
	for {
		select {
		case <-ctx.Done():
			return saved
		case <-kick:
		}
		if seq := delivered.Load(); seq > saved && d.saveCursor(log, s, seq) {
			saved = seq
		}
		if !sleep(ctx, d.opts.CursorInterval) {
			return saved
		}
	}
}

// saveCursor writes the cursor and reports whether it could.
func (d *Dispatcher) saveCursor(log *slog.Logger, s *subscriber, seq int64) bool {
	// The cursor is saved even while shutting down, so use a fresh context.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.src.SetCursor(ctx, s.Name, seq); err != nil {
		log.Error("save event cursor; events after it will be delivered again", "seq", seq, "err", err)
		return false
	}
	return true
}

// deliver calls the handler until it succeeds or MaxAttempts is reached.
// It returns false only when ctx ended first.
func (d *Dispatcher) deliver(ctx context.Context, log *slog.Logger, s *subscriber, ev Envelope) bool {
	if s.ConfigURLs && ev.Type == TypeProvisioned {
		ev = d.withConfigURL(log, ev)
	}
	backoff := d.opts.RetryBackoff
	var err error
	for attempt := 1; ; attempt++ {
		var result string
		result, err = d.call(ctx, s, ev)
		d.deliveries.WithLabelValues(s.Name, result).Inc()
		if err == nil {
			return true
		}
		if result == resultCanceled || ctx.Err() != nil {
			return false
		}
		log.Warn("event handler failed", "event", ev.Type, "seq", ev.Seq, "id", ev.ID, "machine", ev.MachineID,
			"attempt", attempt, "result", result, "err", err)
		if attempt >= d.opts.MaxAttempts {
			break
		}
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	d.deliveries.WithLabelValues(s.Name, resultGaveUp).Inc()
	log.Error("event delivery failed; giving up", "event", ev.Type, "seq", ev.Seq, "id", ev.ID, "machine", ev.MachineID,
		"attempts", d.opts.MaxAttempts, "err", err)
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rerr := d.src.RecordFailure(rctx, s.Name, ev.Seq, d.opts.MaxAttempts, err); rerr != nil {
		log.Error("record failed delivery", "seq", ev.Seq, "err", rerr)
	}
	return true
}

// withConfigURL returns ev, a node.provisioned event, with config_url set
// from its config_token_id; ev unchanged when there is none to set.
func (d *Dispatcher) withConfigURL(log *slog.Logger, ev Envelope) Envelope {
	if d.opts.ConfigURL == nil {
		return ev
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(ev.Payload, &fields); err != nil {
		log.Error("node.provisioned payload does not decode", "seq", ev.Seq, "err", err)
		return ev
	}
	var id string
	if json.Unmarshal(fields["config_token_id"], &id) != nil || id == "" {
		return ev
	}
	url := d.opts.ConfigURL(id)
	if url == "" {
		return ev
	}
	fields["config_url"], _ = json.Marshal(url)
	b, err := json.Marshal(fields)
	if err != nil {
		return ev
	}
	ev.Payload = b
	return ev
}

// shutdownGrace is how long a handler whose context was canceled by the
// shutdown may take to return before it is abandoned.
const shutdownGrace = time.Second

// Handler call states, for counting abandoned calls exactly once.
const (
	callRunning int32 = iota
	callReturned
	callAbandoned
)

// call runs the handler once in its own goroutine under the timeout. A
// handler that ignores its context is abandoned when the timeout passes:
// it keeps its goroutine until it returns (see the abandoned gauge), and
// the subscriber moves on.
func (d *Dispatcher) call(ctx context.Context, s *subscriber, ev Envelope) (result string, err error) {
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
	var state atomic.Int32
	start := time.Now()
	go func() {
		var o outcome
		defer func() {
			if p := recover(); p != nil {
				d.log.Error("event handler panicked", "subscriber", s.Name, "event", ev.Type, "seq", ev.Seq,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				o = outcome{err: fmt.Errorf("handler panicked: %v", p), panicked: true}
			}
			done <- o
			if !state.CompareAndSwap(callRunning, callReturned) {
				d.abandoned.WithLabelValues(s.Name).Dec()
			}
		}()
		o.err = s.Handle(hctx, ev)
	}()

	var (
		o        outcome
		returned bool
	)
	select {
	case o = <-done:
		returned = true
	case <-hctx.Done():
		if ctx.Err() != nil {
			// Shutting down: give a handler that heeds its context a moment
			// to return, so that it does not outlive the dispatcher.
			grace := time.NewTimer(shutdownGrace)
			select {
			case o = <-done:
				returned = true
			case <-grace.C:
			}
			grace.Stop()
		}
		if !returned {
			d.abandoned.WithLabelValues(s.Name).Inc()
			if state.CompareAndSwap(callRunning, callAbandoned) {
				d.duration.WithLabelValues(s.Name).Observe(time.Since(start).Seconds())
				if ctx.Err() != nil {
					return resultCanceled, ctx.Err()
				}
				return resultTimeout, fmt.Errorf("handler did not return within %s", timeout)
			}
			// It returned just now: not abandoned after all.
			d.abandoned.WithLabelValues(s.Name).Dec()
			o = <-done
		}
	}
	d.duration.WithLabelValues(s.Name).Observe(time.Since(start).Seconds())
	switch {
	case o.panicked:
		return resultPanic, o.err
	case o.err == nil:
		return resultOK, nil
	case ctx.Err() != nil:
		return resultCanceled, o.err
	case errors.Is(hctx.Err(), context.DeadlineExceeded):
		return resultTimeout, fmt.Errorf("handler timed out after %s: %w", timeout, o.err)
	}
	return resultError, o.err
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
