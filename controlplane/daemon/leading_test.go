package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/internal/pgtest"
)

// syncBuffer collects a log written concurrently (extensions_test's
// lockedBuffer is in the external test package).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestLeading(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.DSN(t)
	type instance struct {
		logs    syncBuffer
		working chan bool
		done    chan error
	}
	start := func(ctx context.Context) *instance {
		st, err := store.OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		in := &instance{working: make(chan bool, 10), done: make(chan error, 1)}
		log := slog.New(slog.NewTextHandler(&in.logs, nil))
		go func() {
			in.done <- leading(ctx, st, "test-work", log, func(ctx context.Context) error {
				in.working <- true
				<-ctx.Done()
				in.working <- false
				return nil
			})
		}()
		return in
	}
	waitFor := func(in *instance, want bool, within time.Duration) {
		t.Helper()
		select {
		case got := <-in.working:
			if got != want {
				t.Fatalf("working: %v, want %v", got, want)
			}
		case <-time.After(within):
			t.Fatalf("no change to working=%v within %v", want, within)
		}
	}
	actx, stopA := context.WithCancel(ctx)
	a := start(actx)
	waitFor(a, true, 5*time.Second)
	b := start(ctx)
	select {
	case <-b.working:
		t.Fatal("a second instance works while the first leads")
	case <-time.After(2 * time.Second):
	}

	// The leader's lease connection dies (its database session is
	// terminated): it stops working and waits; the other takes over.
	admin, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.DB().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	waitFor(a, false, 15*time.Second)
	// The lease is free: b, waiting for it, or a, waiting again, takes it
	// (whichever asks first), and only one of them.
	next, other := b, a
	select {
	case got := <-b.working:
		if !got {
			t.Fatal("the waiting instance stopped working")
		}
	case got := <-a.working:
		if !got {
			t.Fatal("the first instance stopped working twice")
		}
		next, other = a, b
	case <-time.After(15 * time.Second):
		t.Fatal("nobody took the lease within 15s of the leader's session ending")
	}
	t.Logf("taken over %v after the leader's session ended", time.Since(lost).Round(time.Millisecond))
	select {
	case <-other.working:
		t.Fatal("both instances work")
	case <-time.After(2 * time.Second):
	}
	if !strings.Contains(a.logs.String(), "lost the lease") || !strings.Contains(next.logs.String(), "msg=leading lease=test-work") {
		t.Errorf("logs:\n%s\n%s\nwant the loss and the takeover said", a.logs.String(), b.logs.String())
	}

	// Whichever leads stops; the other takes the lease.
	if next == a {
		stopA()
		if err := <-a.done; err != nil {
			t.Errorf("stopped: %v", err)
		}
		waitFor(b, true, 15*time.Second)
		return
	}
	// The first instance waits for the lease again; stopped, it returns.
	stopA()
	if err := <-a.done; err != nil {
		t.Errorf("stopped while waiting: %v", err)
	}
	select {
	case <-b.working:
		t.Fatal("the leader stopped working while nobody took its lease")
	default:
	}
}
