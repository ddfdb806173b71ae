package events_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/store"
)

// hang bounds every wait: long enough never to fire on a slow machine, so
// that it detects hangs, not slowness.
const hang = 30 * time.Second

// fast are options that keep the tests quick: the outbox is polled often,
// so a test that forgets Notify is slow, never stuck.
func fast() events.Options {
	return events.Options{
		Timeout:        200 * time.Millisecond,
		MaxAttempts:    2,
		RetryBackoff:   5 * time.Millisecond,
		Poll:           20 * time.Millisecond,
		CursorInterval: 10 * time.Millisecond,
	}
}

// newMachine inserts a machine without events.
func newMachine(t testing.TB, st *store.Store, name string) *store.Machine {
	t.Helper()
	m := &store.Machine{EKFingerprint: fmt.Sprintf("%064x", name), State: lifecycle.Registered}
	_, err := st.Update(context.Background(), func(tx *store.Tx) error { return tx.InsertMachine(context.Background(), m) })
	if err != nil {
		t.Fatalf("insert machine %s: %v", name, err)
	}
	return m
}

// commit writes ev for m in its own transaction and returns it as stored.
func commit(t testing.TB, st *store.Store, m *store.Machine, ev events.Event) events.Envelope {
	t.Helper()
	evs, err := st.Update(context.Background(), func(tx *store.Tx) error { return tx.Emit(context.Background(), m, ev) })
	if err != nil || len(evs) != 1 {
		t.Errorf("commit %T for %s: %d events, %v", ev, m.ID, len(evs), err)
		return events.Envelope{}
	}
	return evs[0]
}

// role returns a distinct event: the i-th role change.
func role(i int) events.Event { return &events.RoleChanged{NewRole: fmt.Sprintf("r%d", i)} }

// isRole reports whether ev is role(i).
func isRole(ev events.Envelope, i int) bool {
	p, err := ev.Decode()
	rc, ok := p.(*events.RoleChanged)
	return err == nil && ok && rc.NewRole == fmt.Sprintf("r%d", i)
}

// running is a dispatcher under test.
type running struct {
	*events.Dispatcher
	reg  *prometheus.Registry
	logs *lockedBuffer
	stop func()
}

// start subscribes subs, prepares the cursors and runs the dispatcher until
// stop or the end of the test.
func start(t *testing.T, src events.Source, opts events.Options, subs ...events.Subscription) *running {
	t.Helper()
	r := &running{reg: prometheus.NewRegistry(), logs: &lockedBuffer{}}
	opts.Registerer = r.reg
	opts.Logger = slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.Dispatcher = events.NewDispatcher(src, opts)
	for _, s := range subs {
		if err := r.Subscribe(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(hang):
				t.Fatalf("dispatcher did not stop within %s", hang)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// metric returns the value of a counter or gauge with the given labels.
func (r *running) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// recorder is a handler that keeps what it was given.
type recorder struct {
	mu  sync.Mutex
	evs []events.Envelope
}

func (r *recorder) handle(_ context.Context, ev events.Envelope) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	return nil
}

func (r *recorder) got() []events.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Envelope(nil), r.evs...)
}

// wait returns the first n events once there are at least n.
func (r *recorder) wait(t *testing.T, n int) []events.Envelope {
	t.Helper()
	eventually(t, fmt.Sprintf("%d events delivered", n), func() bool { return len(r.got()) >= n })
	return r.got()[:n]
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, hang)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func seqs(evs []events.Envelope) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func sameSeqs(t *testing.T, what string, got, want []events.Envelope) {
	t.Helper()
	if g, w := fmt.Sprint(seqs(got)), fmt.Sprint(seqs(want)); g != w {
		t.Errorf("%s: got seqs %s, want %s", what, g, w)
	}
}

type failure struct {
	Subscriber string
	Seq        int64
	Attempts   int
	Error      string
}

func failures(t *testing.T, st *store.Store) []failure {
	t.Helper()
	rows, err := st.DB().QueryContext(context.Background(),
		`SELECT subscriber, seq, attempts, error FROM event_failures ORDER BY subscriber, seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []failure
	for rows.Next() {
		var f failure
		if err := rows.Scan(&f.Subscriber, &f.Seq, &f.Attempts, &f.Error); err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func cursor(t *testing.T, st *store.Store, name string) int64 {
	t.Helper()
	cs, err := st.Cursors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cs[name]
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestInOrderPerMachine commits from several goroutines at once, one per
// machine, and checks that each machine's events arrive in the order they
// were committed, and the whole stream in commit order.
func TestInOrderPerMachine(t *testing.T) {
	st := openStore(t)
	var rec recorder
	d := start(t, st, fast(), events.Subscription{Name: "rec", Handle: rec.handle})

	const machines, perMachine = 4, 25
	committed := make([][]events.Envelope, machines)
	var wg sync.WaitGroup
	for i := range machines {
		m := newMachine(t, st, fmt.Sprint("m", i))
		wg.Go(func() {
			for j := range perMachine {
				committed[i] = append(committed[i], commit(t, st, m, role(j)))
				d.Notify()
			}
		})
	}
	wg.Wait()

	got := rec.wait(t, machines*perMachine)
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("event %d has seq %d after seq %d: not in commit order", i, got[i].Seq, got[i-1].Seq)
		}
	}
	for i := range machines {
		var mine []events.Envelope
		for _, e := range got {
			if e.MachineID == committed[i][0].MachineID {
				mine = append(mine, e)
			}
		}
		sameSeqs(t, fmt.Sprint("machine ", i), mine, committed[i])
	}
}

// TestEverySubscriberGetsEveryEvent fans out to three subscribers.
func TestEverySubscriberGetsEveryEvent(t *testing.T) {
	st := openStore(t)
	recs := make([]*recorder, 3)
	var subs []events.Subscription
	for i := range recs {
		recs[i] = &recorder{}
		subs = append(subs, events.Subscription{Name: fmt.Sprint("sub", i), Handle: recs[i].handle})
	}
	d := start(t, st, fast(), subs...)
	m := newMachine(t, st, "m")
	var want []events.Envelope
	for i := range 30 {
		want = append(want, commit(t, st, m, role(i)))
		d.Notify()
	}
	for i, r := range recs {
		got := r.wait(t, len(want))
		sameSeqs(t, fmt.Sprint("subscriber ", i), got, want)
		for j := range got {
			if got[j].ID != want[j].ID || string(got[j].Payload) != string(want[j].Payload) {
				t.Errorf("subscriber %d event %d = %+v, want %+v", i, j, got[j], want[j])
			}
		}
	}
	d.stop()
	for i, r := range recs {
		if n := len(r.got()); n != len(want) {
			t.Errorf("subscriber %d got %d events, want exactly %d (no failures, so no redelivery)", i, n, len(want))
		}
		if got := d.metric(t, "attestation_event_deliveries_total", "subscriber", fmt.Sprint("sub", i), "result", "ok"); got != float64(len(want)) {
			t.Errorf("subscriber %d: %v ok deliveries counted, want %d", i, got, len(want))
		}
	}
}

// TestTypeFilter: a subscriber gets only the types it asked for, and its
// cursor still moves past the others.
func TestTypeFilter(t *testing.T) {
	st := openStore(t)
	var filtered, all recorder
	d := start(t, st, fast(),
		events.Subscription{Name: "filtered", Types: []events.Type{events.TypeRegistered, events.TypeDecommissioned}, Handle: filtered.handle},
		events.Subscription{Name: "all", Handle: all.handle},
	)
	m := newMachine(t, st, "m")
	var want []events.Envelope
	for _, typ := range events.Types() {
		ev, _ := events.New(typ)
		e := commit(t, st, m, ev)
		if typ == events.TypeRegistered || typ == events.TypeDecommissioned {
			want = append(want, e)
		}
	}
	d.Notify()
	last := all.wait(t, len(events.Types()))[len(events.Types())-1]
	// Delivery is in order, so once the last event has reached "filtered"'s
	// cursor, everything it was going to get has arrived.
	eventually(t, "cursor of filtered at the last event", func() bool { return cursor(t, st, "filtered") == last.Seq })
	sameSeqs(t, "filtered", filtered.got(), want)
}

// TestOn: a typed subscription gets its type only, decoded.
func TestOn(t *testing.T) {
	st := openStore(t)
	got := make(chan events.Online, 10)
	d := start(t, st, fast(), events.On("typed", func(_ context.Context, ev events.Online) error {
		got <- ev
		return nil
	}))
	m := newMachine(t, st, "m")
	commit(t, st, m, &events.Registered{})
	want := commit(t, st, m, &events.Online{Hostname: "node-1", Role: "worker", FirstSeen: t1})
	d.Notify()
	select {
	case ev := <-got:
		if ev.Event != events.TypeOnline || ev.ID != want.ID || ev.Seq != want.Seq || ev.MachineID != m.ID ||
			ev.Hostname != "node-1" || ev.Role != "worker" || !ev.FirstSeen.Equal(t1) || len(ev.Raw) == 0 {
			t.Errorf("typed handler got %+v, want the node.online event %+v", ev, want)
		}
	case <-time.After(hang):
		t.Fatal("typed handler not called")
	}
	if s := events.On("bad", func(context.Context, events.Common) error { return nil }); s.Types[0].Valid() {
		t.Errorf("On with a non-event payload subscribes to %q", s.Types[0])
	}
}

// TestIsolation runs a panicking, a slow and a failing subscriber beside a
// healthy one: the healthy one gets everything, the others are retried,
// counted and recorded as failed.
func TestIsolation(t *testing.T) {
	st := openStore(t)
	var healthy recorder
	opts := fast()
	d := start(t, st, opts,
		events.Subscription{Name: "panics", Handle: func(context.Context, events.Envelope) error { panic("handler bug") }},
		events.Subscription{Name: "slow", Handle: func(ctx context.Context, _ events.Envelope) error {
			select {
			case <-time.After(time.Hour):
			case <-ctx.Done():
			}
			return ctx.Err()
		}},
		events.Subscription{Name: "fails", Handle: func(context.Context, events.Envelope) error { return errors.New("backend down") }},
		events.Subscription{Name: "healthy", Handle: healthy.handle},
	)
	m := newMachine(t, st, "m")
	var want []events.Envelope
	for i := range 3 {
		want = append(want, commit(t, st, m, role(i)))
	}
	d.Notify()
	sameSeqs(t, "healthy", healthy.wait(t, len(want)), want)

	bad := []string{"fails", "panics", "slow"}
	eventually(t, "failures recorded", func() bool { return len(failures(t, st)) == len(bad)*len(want) })
	d.stop()

	wantErr := map[string]string{"fails": "backend down", "panics": "handler panicked: handler bug", "slow": "200ms"}
	for i, f := range failures(t, st) {
		sub, seq := bad[i/len(want)], want[i%len(want)].Seq
		if f.Subscriber != sub || f.Seq != seq || f.Attempts != opts.MaxAttempts || !strings.Contains(f.Error, wantErr[sub]) {
			t.Errorf("failure %d = %+v, want subscriber %s, seq %d, %d attempts, error containing %q",
				i, f, sub, seq, opts.MaxAttempts, wantErr[sub])
		}
	}
	attempts := float64(len(want) * opts.MaxAttempts)
	for _, tc := range []struct {
		sub, result string
		want        float64
	}{
		{"healthy", "ok", float64(len(want))},
		{"healthy", "error", 0},
		{"healthy", "gave_up", 0},
		{"panics", "panic", attempts},
		{"panics", "gave_up", float64(len(want))},
		{"slow", "timeout", attempts},
		{"slow", "gave_up", float64(len(want))},
		{"fails", "error", attempts},
		{"fails", "gave_up", float64(len(want))},
		{"fails", "ok", 0},
	} {
		if got := d.metric(t, "attestation_event_deliveries_total", "subscriber", tc.sub, "result", tc.result); got != tc.want {
			t.Errorf("deliveries{subscriber=%s,result=%s} = %v, want %v", tc.sub, tc.result, got, tc.want)
		}
	}
	if logs := d.logs.String(); !strings.Contains(logs, "event handler panicked") || !strings.Contains(logs, "goroutine") {
		t.Errorf("the panic and its stack were not logged:\n%s", logs)
	}
	// Given-up events are skipped: every cursor reached the end.
	for _, name := range []string{"healthy", "panics", "slow", "fails"} {
		if got := cursor(t, st, name); got != want[len(want)-1].Seq {
			t.Errorf("cursor of %s = %d, want %d", name, got, want[len(want)-1].Seq)
		}
	}
}

// TestBlockedSubscriberDoesNotDelayOthers: while one handler is stuck (with
// a long timeout), commits go on and the other subscriber gets them all.
func TestBlockedSubscriberDoesNotDelayOthers(t *testing.T) {
	st := openStore(t)
	var healthy, blocked recorder
	release := make(chan struct{})
	entered := make(chan struct{}, 100)
	d := start(t, st, fast(),
		events.Subscription{Name: "blocked", Timeout: time.Hour, Handle: func(ctx context.Context, ev events.Envelope) error {
			entered <- struct{}{}
			<-release
			return blocked.handle(ctx, ev)
		}},
		events.Subscription{Name: "healthy", Handle: healthy.handle},
	)
	m := newMachine(t, st, "m")
	want := []events.Envelope{commit(t, st, m, role(0))}
	d.Notify()
	select {
	case <-entered:
	case <-time.After(hang):
		t.Fatal("blocked handler not called")
	}
	for i := 1; i < 5; i++ {
		want = append(want, commit(t, st, m, role(i)))
		d.Notify()
	}
	sameSeqs(t, "healthy", healthy.wait(t, len(want)), want)
	if n := len(blocked.got()); n != 0 {
		t.Fatalf("blocked handler recorded %d events while blocked", n)
	}
	close(release)
	sameSeqs(t, "blocked, once released", blocked.wait(t, len(want)), want)
}

// TestRetryThenSuccess: a handler that fails once per event gets each
// event again and the delivery succeeds; nothing is recorded as failed.
func TestRetryThenSuccess(t *testing.T) {
	st := openStore(t)
	var rec recorder
	var mu sync.Mutex
	calls := map[int64]int{}
	opts := fast()
	opts.MaxAttempts = 3
	d := start(t, st, opts, events.Subscription{Name: "flaky", Handle: func(ctx context.Context, ev events.Envelope) error {
		mu.Lock()
		calls[ev.Seq]++
		n := calls[ev.Seq]
		mu.Unlock()
		if n == 1 {
			return errors.New("transient")
		}
		return rec.handle(ctx, ev)
	}})
	m := newMachine(t, st, "m")
	var want []events.Envelope
	for i := range 3 {
		want = append(want, commit(t, st, m, role(i)))
	}
	d.Notify()
	sameSeqs(t, "flaky", rec.wait(t, len(want)), want)
	d.stop()
	for _, e := range want {
		if calls[e.Seq] != 2 {
			t.Errorf("event %d: %d calls, want 2", e.Seq, calls[e.Seq])
		}
	}
	if f := failures(t, st); len(f) != 0 {
		t.Errorf("failures recorded: %+v", f)
	}
	for result, want := range map[string]float64{"error": 3, "ok": 3, "gave_up": 0} {
		if got := d.metric(t, "attestation_event_deliveries_total", "subscriber", "flaky", "result", result); got != want {
			t.Errorf("deliveries{result=%s} = %v, want %v", result, got, want)
		}
	}
}

// TestHandlerIgnoringContext: a handler that never returns is abandoned at
// its timeout; the subscriber goes on and shutdown does not wait for it.
func TestHandlerIgnoringContext(t *testing.T) {
	st := openStore(t)
	var rec recorder
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	opts := fast()
	opts.Timeout, opts.MaxAttempts = 100*time.Millisecond, 1
	d := start(t, st, opts, events.Subscription{Name: "stubborn", Handle: func(ctx context.Context, ev events.Envelope) error {
		if isRole(ev, 0) {
			<-release // ignores ctx
		}
		return rec.handle(ctx, ev)
	}})
	m := newMachine(t, st, "m")
	stuck := commit(t, st, m, role(0))
	want := []events.Envelope{commit(t, st, m, role(1)), commit(t, st, m, role(2))}
	d.Notify()
	sameSeqs(t, "stubborn", rec.wait(t, len(want)), want)

	if f := failures(t, st); len(f) != 1 || f[0].Seq != stuck.Seq || !strings.Contains(f[0].Error, "did not return within 100ms") {
		t.Errorf("failures = %+v, want one for seq %d saying the handler did not return", f, stuck.Seq)
	}
	if got := d.metric(t, "attestation_event_handlers_abandoned", "subscriber", "stubborn"); got != 1 {
		t.Errorf("abandoned handlers = %v, want 1", got)
	}
	d.stop() // returns although the handler is still stuck
	if got := d.metric(t, "attestation_event_deliveries_total", "subscriber", "stubborn", "result", "timeout"); got != 1 {
		t.Errorf("timeouts counted = %v, want 1", got)
	}
}

// TestCursorPersists: a restarted dispatcher delivers what was committed
// while it was down, and nothing it had delivered before.
func TestCursorPersists(t *testing.T) {
	st := openStore(t)
	m := newMachine(t, st, "m")
	var before recorder
	d := start(t, st, fast(), events.Subscription{Name: "s", Handle: before.handle})
	var old []events.Envelope
	for i := range 3 {
		old = append(old, commit(t, st, m, role(i)))
	}
	d.Notify()
	sameSeqs(t, "before restart", before.wait(t, len(old)), old)
	d.stop()
	if got, want := cursor(t, st, "s"), old[len(old)-1].Seq; got != want {
		t.Fatalf("cursor after stop = %d, want %d", got, want)
	}

	var want []events.Envelope
	for i := 3; i < 5; i++ {
		want = append(want, commit(t, st, m, role(i)))
	}
	var after recorder
	d = start(t, st, fast(), events.Subscription{Name: "s", Handle: after.handle})
	// Delivery is in order, so an old event would come first.
	sameSeqs(t, "after restart", after.wait(t, len(want)), want)
}

// TestNewSubscriberStartsAtHead: a subscriber seen for the first time gets
// what is committed from then on, not the history.
func TestNewSubscriberStartsAtHead(t *testing.T) {
	st := openStore(t)
	m := newMachine(t, st, "m")
	for i := range 3 {
		commit(t, st, m, role(i))
	}
	var rec recorder
	d := start(t, st, fast(), events.Subscription{Name: "late", Handle: rec.handle})
	want := []events.Envelope{commit(t, st, m, role(3))}
	d.Notify()
	sameSeqs(t, "late", rec.wait(t, 1), want)
}

// TestShutdownKeepsUndelivered: stopping while a handler is working on an
// event must not move the cursor past it; the next run delivers it.
func TestShutdownKeepsUndelivered(t *testing.T) {
	for _, tc := range []struct {
		name string
		// handle is the handler's answer to the second event.
		handle func(ctx context.Context, entered chan<- struct{}) error
		opts   func(*events.Options)
	}{
		{"in handler", func(ctx context.Context, entered chan<- struct{}) error {
			entered <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}, func(o *events.Options) { o.Timeout = time.Hour }},
		{"in retry backoff", func(ctx context.Context, entered chan<- struct{}) error {
			entered <- struct{}{}
			return errors.New("try later")
		}, func(o *events.Options) { o.RetryBackoff, o.MaxAttempts = time.Hour, 5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			m := newMachine(t, st, "m")
			opts := fast()
			opts.CursorInterval = time.Nanosecond
			tc.opts(&opts)
			entered := make(chan struct{}, 10)
			var rec recorder
			d := start(t, st, opts, events.Subscription{Name: "s", Handle: func(ctx context.Context, ev events.Envelope) error {
				if isRole(ev, 1) {
					return tc.handle(ctx, entered)
				}
				return rec.handle(ctx, ev)
			}})
			evs := []events.Envelope{commit(t, st, m, role(0)), commit(t, st, m, role(1)), commit(t, st, m, role(2))}
			d.Notify()
			select {
			case <-entered:
			case <-time.After(hang):
				t.Fatal("handler not called for the second event")
			}
			d.stop()
			if got := cursor(t, st, "s"); got != evs[0].Seq {
				t.Fatalf("cursor after shutdown = %d, want %d (the last event delivered)", got, evs[0].Seq)
			}
			if f := failures(t, st); len(f) != 0 {
				t.Errorf("shutdown recorded failures: %+v", f)
			}
			var again recorder
			start(t, st, fast(), events.Subscription{Name: "s", Handle: again.handle})
			sameSeqs(t, "after restart", again.wait(t, 2), evs[1:])
		})
	}
}

// TestNotifyWakes: with polling effectively off, only Notify can wake the
// subscribers; every event must still arrive (no lost wake-up).
func TestNotifyWakes(t *testing.T) {
	st := openStore(t)
	opts := fast()
	opts.Poll = time.Hour
	recs := []*recorder{{}, {}}
	d := start(t, st, opts,
		events.Subscription{Name: "a", Handle: recs[0].handle},
		events.Subscription{Name: "b", Handle: recs[1].handle},
	)
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for i := range writers {
		m := newMachine(t, st, fmt.Sprint("m", i))
		wg.Go(func() {
			for j := range each {
				commit(t, st, m, role(j))
				d.Notify()
			}
		})
	}
	wg.Wait()
	for _, r := range recs {
		r.wait(t, writers*each)
	}
}

// gapSource runs after once, right after a read of the outbox that found
// nothing: a commit lands between the subscriber's read and its wait.
type gapSource struct {
	*store.Store
	once  sync.Once
	after func()
}

func (g *gapSource) EventsAfter(ctx context.Context, after int64, limit int) ([]events.Envelope, error) {
	evs, err := g.Store.EventsAfter(ctx, after, limit)
	if err == nil && len(evs) == 0 {
		g.once.Do(g.after)
	}
	return evs, err
}

// TestNotifyBetweenReadAndWait: a commit whose Notify comes after the
// subscriber read the outbox but before it waits must still wake it.
func TestNotifyBetweenReadAndWait(t *testing.T) {
	st := openStore(t)
	m := newMachine(t, st, "m")
	opts := fast()
	opts.Poll = time.Hour
	var (
		rec  recorder
		d    *running
		want []events.Envelope
		src  = &gapSource{Store: st}
	)
	ready := make(chan struct{})
	src.after = func() {
		<-ready
		want = append(want, commit(t, st, m, role(0)))
		d.Notify()
	}
	d = start(t, src, opts, events.Subscription{Name: "s", Handle: rec.handle})
	close(ready)
	got := rec.wait(t, 1)
	sameSeqs(t, "s", got, want)
}

// TestCursorInterval: the cursor is written at once after a quiet spell,
// then at most once per interval, and always at shutdown.
func TestCursorInterval(t *testing.T) {
	st := openStore(t)
	m := newMachine(t, st, "m")
	var rec recorder
	opts := fast()
	opts.CursorInterval = time.Hour
	d := start(t, st, opts, events.Subscription{Name: "s", Handle: rec.handle})
	first := commit(t, st, m, role(0))
	d.Notify()
	rec.wait(t, 1)
	eventually(t, "cursor written after the first delivery", func() bool { return cursor(t, st, "s") == first.Seq })
	want := []events.Envelope{commit(t, st, m, role(1)), commit(t, st, m, role(2))}
	d.Notify()
	rec.wait(t, 3)
	if got := cursor(t, st, "s"); got != first.Seq {
		t.Errorf("cursor written again within the interval: %d, want still %d", got, first.Seq)
	}
	d.stop()
	if got := cursor(t, st, "s"); got != want[1].Seq {
		t.Errorf("cursor after stop = %d, want %d", got, want[1].Seq)
	}

	// With a short interval it keeps being written while running.
	var rec2 recorder
	d = start(t, st, fast(), events.Subscription{Name: "s", Handle: rec2.handle})
	for i := range 3 {
		last := commit(t, st, m, role(3+i))
		d.Notify()
		rec2.wait(t, i+1)
		eventually(t, "cursor written while running", func() bool { return cursor(t, st, "s") == last.Seq })
	}
}

func TestSubscribeErrors(t *testing.T) {
	ok := func(context.Context, events.Envelope) error { return nil }
	for _, tc := range []struct {
		name string
		sub  events.Subscription
		want string
	}{
		{"no name", events.Subscription{Handle: ok}, "needs a name"},
		{"no handler", events.Subscription{Name: "x"}, "needs a name and a handler"},
		{"taken", events.Subscription{Name: "taken", Handle: ok}, "already taken"},
		{"unknown type", events.Subscription{Name: "y", Handle: ok, Types: []events.Type{"node.unknown"}}, "unknown event type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := events.NewDispatcher(openStore(t), events.Options{})
			if err := d.Subscribe(events.Subscription{Name: "taken", Handle: ok}); err != nil {
				t.Fatal(err)
			}
			if err := d.Subscribe(tc.sub); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Subscribe() error = %v, want one containing %q", err, tc.want)
			}
			if got := d.Subscribers(); len(got) != 1 || got[0] != "taken" {
				t.Errorf("Subscribers() = %v, want [taken]", got)
			}
		})
	}
}

func TestRunOnce(t *testing.T) {
	st := openStore(t)
	d := start(t, st, fast(), events.Subscription{Name: "s", Handle: (&recorder{}).handle})
	var i int
	eventually(t, "dispatcher running", func() bool {
		i++
		err := d.Subscribe(events.Subscription{Name: fmt.Sprint("late", i), Handle: (&recorder{}).handle})
		return err != nil && strings.Contains(err.Error(), "already running")
	})
	if err := d.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
}

// TestSharedRegistry: two dispatchers on one registry (a restart in the
// same process) share the metrics instead of panicking.
func TestSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := openStore(t)
	for range 2 {
		events.NewDispatcher(st, events.Options{Registerer: reg})
	}
}

func TestSignal(t *testing.T) {
	var s events.Signal
	s.Notify() // nobody waiting: nothing to do
	c1, c2 := s.C(), s.C()
	if c1 != c2 {
		t.Error("two C() before a Notify returned different channels")
	}
	select {
	case <-c1:
		t.Fatal("channel closed before Notify")
	default:
	}
	s.Notify()
	for _, c := range []<-chan struct{}{c1, c2} {
		select {
		case <-c:
		default:
			t.Fatal("channel not closed by Notify")
		}
	}
	select {
	case <-s.C():
		t.Error("C() after Notify is already closed")
	default:
	}
}

// countingSource counts the reads of the outbox.
type countingSource struct {
	*store.Store
	reads atomic.Int64
}

func (c *countingSource) EventsAfter(ctx context.Context, after int64, limit int) ([]events.Envelope, error) {
	c.reads.Add(1)
	return c.Store.EventsAfter(ctx, after, limit)
}

// TestCommittedFromMemory: events handed to Committed reach every
// subscriber, in order and as the outbox holds them, without the
// subscribers reading the outbox for them; a commit made without
// Committed (another instance's, over the same database) leaves a gap that
// sends them to the outbox, where nothing is skipped.
func TestCommittedFromMemory(t *testing.T) {
	st := openStore(t)
	src := &countingSource{Store: st}
	opts := fast()
	opts.Poll = time.Hour
	recs := []*recorder{{}, {}}
	d := start(t, src, opts,
		events.Subscription{Name: "a", Handle: recs[0].handle},
		events.Subscription{Name: "b", Handle: recs[1].handle},
	)
	m := newMachine(t, st, "m")
	// Both subscribers read the outbox once as they start, and find it
	// empty.
	eventually(t, "the first reads", func() bool { return src.reads.Load() == 2 })

	var want []events.Envelope
	const writers, each = 4, 50
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for range writers {
		wg.Go(func() {
			for j := range each {
				ev := commit(t, st, m, role(j))
				d.Committed([]events.Envelope{ev})
				mu.Lock()
				want = append(want, ev)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(want, func(a, b events.Envelope) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, r := range recs {
		sameSeqs(t, "delivered", r.wait(t, writers*each), want)
	}
	// Commits hand in their events in any order, so a subscriber may have
	// found a gap and read the outbox a few times; most came from memory.
	if reads := src.reads.Load() - 2; reads > writers*each/4 {
		t.Errorf("%d reads of the outbox for %d events handed to Committed", reads, writers*each)
	}
	stored, err := st.ListEvents(context.Background(), store.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if got := r.got(); !reflect.DeepEqual(got, stored) {
			t.Fatalf("delivered from memory:\n%+v\nthe outbox holds:\n%+v", got[0], stored[0])
		}
	}

	// Another instance's commit: in the outbox only, with no wake-up.
	other := commit(t, st, m, role(1000))
	last := commit(t, st, m, role(1001))
	d.Committed([]events.Envelope{last})
	for _, r := range recs {
		got := r.wait(t, writers*each+2)
		sameSeqs(t, "after the gap", got[writers*each:], []events.Envelope{other, last})
	}
}
