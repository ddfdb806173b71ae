package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/attestation/attestation/controlplane/events"
)

// ErrClosed: the store was closed.
var ErrClosed = errors.New("store closed")

// maxGroup bounds how many updates share one commit.
const maxGroup = 128

// update is one Update call waiting for the committer.
type update struct {
	ctx    context.Context
	fn     func(*Tx) error
	result chan updateResult
}

type updateResult struct {
	events []events.Envelope
	err    error
	// panicked is what fn panicked with, re-raised in the caller.
	panicked any
}

// Update runs fn in a write transaction and commits it when fn returns nil;
// when fn returns an error (or panics) nothing it wrote is kept. It returns
// the events fn emitted, as committed.
//
// Updates are group-committed: while one commit is being made durable (an
// fsync of the WAL), the updates that arrive queue up, and the next commit
// carries all of them, each in its own savepoint so that one failing does
// not undo the others. Every caller still returns only after its change is
// durable, and the changes commit in the order they ran; what is saved is
// the fsyncs, which bound the commit rate.
//
// On PostgreSQL, where other instances write too, a group that conflicts
// with their writes runs again: fn may then run more than once, each time
// on a fresh Tx, and only the last run's writes and events count. fn must
// therefore change nothing but through tx (or change it idempotently).
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) ([]events.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u := &update{ctx: ctx, fn: fn, result: make(chan updateResult, 1)}
	select {
	case s.updates <- u:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.quit:
		return nil, ErrClosed
	}
	// Once queued, wait for the outcome even if ctx ends: the update may
	// already be committed, and the caller must not be told otherwise.
	r := <-u.result
	if r.panicked != nil {
		panic(r.panicked)
	}
	return r.events, r.err
}

// commitLoop is the one goroutine that runs updates and commits them.
func (s *Store) commitLoop() {
	defer close(s.done)
	// lastCommit is when the last group committed; window times the wait
	// for a group under load.
	var lastCommit time.Time
	window := time.NewTimer(groupWindow)
	window.Stop()
	for {
		var group []*update
		select {
		case u := <-s.updates:
			group = append(group, u)
		case <-s.quit:
			return
		}
		// Let the goroutines that can run first, as long as that brings
		// more updates: the requests under way reach their updates
		// within a turn or two. Without it, on one core (GOMAXPROCS 1)
		// the loop takes the first update before any other request has
		// run and commits it alone, one fsync for each: a group only
		// formed of what queued while a commit waited for its fsync,
		// which the kernel mostly answers before the runtime hands the
		// core to another goroutine. With nothing else to run, the
		// update commits at once.
		for len(group) < maxGroup {
			runtime.Gosched()
			n := len(group)
		collect:
			for len(group) < maxGroup {
				select {
				case u := <-s.updates:
					group = append(group, u)
				default:
					break collect
				}
			}
			if len(group) == n {
				break
			}
		}
		// Under load (the last commit ended a moment ago), wait a little
		// for the updates of requests still reading their bodies or
		// working: a commit costs some 0.2 ms of CPU here (its writes, the
		// fsync, the switches around it), and at a moderate rate, with
		// few requests runnable at once, groups of one or two would spend
		// more of the core on commits than on requests. When idle, the
		// update commits at once.
		if len(group) < maxGroup && time.Since(lastCommit) < busyGap {
			window.Reset(groupWindow)
		wait:
			for len(group) < maxGroup {
				select {
				case u := <-s.updates:
					group = append(group, u)
				case <-window.C:
					break wait
				}
			}
			window.Stop()
		}
		s.groups.Add(1)
		s.grouped.Add(int64(len(group)))
		s.commitGroup(group)
		lastCommit = time.Now()
	}
}

// groupWindow is how long the committer waits for more updates under
// load, and busyGap how recent the last commit must be for it to wait.
const (
	groupWindow = 300 * time.Microsecond
	busyGap     = 2 * time.Millisecond
)

// maxGroupAttempts bounds how many times a group runs when it keeps
// conflicting with other writers (PostgreSQL).
const maxGroupAttempts = 10

// commitGroup runs a group of updates in one transaction, each in a
// savepoint, and commits once. On PostgreSQL a group that conflicts with
// another instance's writes (a serialization failure or a deadlock) runs
// again as a whole, each update's fn on a fresh Tx, a bounded number of
// times.
func (s *Store) commitGroup(group []*update) {
	results := make([]updateResult, len(group))
	for attempt := 1; ; attempt++ {
		conflict := s.runGroup(group, results)
		if conflict == nil {
			break
		}
		if attempt == maxGroupAttempts {
			for i := range results {
				results[i] = updateResult{err: fmt.Errorf("gave up after %d conflicts with other writers: %w", attempt, conflict)}
			}
			break
		}
		// Apart from the writer it met, so as not to meet it again.
		time.Sleep(time.Duration(attempt) * time.Duration(1+rand.N(5)) * time.Millisecond)
	}
	for i, u := range group {
		u.result <- results[i]
	}
}

// runGroup runs the group once, writing the outcome of each update to
// results, unless a conflict rolled the whole group back for it to run
// again: runGroup then returns the conflict.
func (s *Store) runGroup(group []*update, results []updateResult) (conflict error) {
	clear(results)
	failAll := func(err error) error {
		if s.d.retryable(err) {
			return err
		}
		for i := range results {
			results[i] = updateResult{err: errors.Join(results[i].err, err)}
		}
		return nil
	}
	ctx := context.Background()
	tx, err := s.w.BeginTx(ctx, s.d.groupTx)
	if err != nil {
		return failAll(fmt.Errorf("begin transaction: %w", err))
	}
	for i, u := range group {
		if err := u.ctx.Err(); err != nil {
			results[i].err = err
			continue
		}
		if _, err := tx.StmtContext(ctx, s.savepoint).ExecContext(ctx); err != nil {
			tx.Rollback()
			return failAll(fmt.Errorf("savepoint: %w", err))
		}
		t := &Tx{tx: tx, d: s.d, now: time.Now().UTC()}
		if p, err := runFn(t, u.fn); err != nil || p != nil {
			if s.d.retryable(err) {
				tx.Rollback()
				return err
			}
			results[i].err, results[i].panicked = err, p
			// Undo only this update. If SQLite aborted the whole
			// transaction (I/O error, disk full), nothing can be kept.
			if _, rerr := tx.StmtContext(ctx, s.rollbackTo).ExecContext(ctx); rerr != nil {
				tx.Rollback()
				return failAll(fmt.Errorf("transaction aborted: %w", rerr))
			}
		} else {
			results[i].events = t.emitted
		}
		if _, err := tx.StmtContext(ctx, s.release).ExecContext(ctx); err != nil {
			tx.Rollback()
			return failAll(fmt.Errorf("release savepoint: %w", err))
		}
	}
	if err := tx.Commit(); err != nil {
		tx.Rollback()
		if s.d.retryable(err) {
			return err
		}
		for i := range results {
			if results[i].err == nil {
				results[i] = updateResult{err: fmt.Errorf("commit: %w", err)}
			}
		}
	}
	return nil
}

// runFn calls fn, catching a panic so that one bad update cannot take
// down the committer (and with it every later write); the panic is raised
// again in the caller's goroutine.
func runFn(t *Tx, fn func(*Tx) error) (panicked any, err error) {
	defer func() {
		if p := recover(); p != nil {
			panicked = fmt.Sprintf("%v\n[in store.Update]\n%s", p, debug.Stack())
		}
	}()
	return nil, fn(t)
}
