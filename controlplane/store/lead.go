package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync"
	"time"
)

// How often Lead tries again while another process leads, and how often a
// held lease checks its connection (PostgreSQL).
const (
	leadRetry   = time.Second
	leasePing   = time.Second
	pingTimeout = 2 * time.Second
)

// Lease is leadership of a name, held by one process of those sharing
// the database at a time (Store.Lead).
type Lease struct {
	name string
	// lost is closed when the lease ends: lost, released or its store
	// closed.
	lost chan struct{}
	// stop asks the keeper to release; stopped is closed once it has.
	stop, stopped chan struct{}
	once          sync.Once
}

// Name is what the lease leads.
func (l *Lease) Name() string { return l.name }

// Lost is closed when the process no longer leads: its connection to
// PostgreSQL broke (another process may lead from then on), or the lease
// was released. Leading work must stop when it is closed.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives up the leadership (another process may take it at once)
// and closes Lost. It can be called more than once.
func (l *Lease) Release() {
	l.once.Do(func() { close(l.stop) })
	<-l.stopped
}

// Lead blocks until this process leads name, among every process that
// shares the database, and returns the lease; it fails when ctx ends.
//
// On PostgreSQL it holds a session-level advisory lock on a connection
// of its own, trying again every second while another process holds it,
// and pings that connection every second: when the connection breaks,
// Lost is closed, and when this process dies, PostgreSQL ends its session
// and another process takes the lease within seconds. The two can
// overlap for as long as it takes this process to notice (a ping), so
// leading work must stay correct then too (its writes go through Update).
// On SQLite one process owns the database: Lead waits only for another
// lease of name in this process, and the lease is never lost.
func (s *Store) Lead(ctx context.Context, name string) (*Lease, error) {
	for {
		l, ok, err := s.TryLead(ctx, name)
		if err != nil || ok {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lead %s: %w", name, ctx.Err())
		case <-time.After(leadRetry):
		}
	}
}

// TryLead is Lead without waiting: it reports false when another process
// (or another lease of this store) leads name.
func (s *Store) TryLead(ctx context.Context, name string) (*Lease, bool, error) {
	return s.lock(ctx, name, false)
}

// lock takes the lease of name, waiting for it when wait is set.
func (s *Store) lock(ctx context.Context, name string, wait bool) (*Lease, bool, error) {
	if s.leases == nil {
		return s.lockLocal(name)
	}
	return s.lockPostgres(ctx, name, wait)
}

func newLease(name string) *Lease {
	return &Lease{name: name, lost: make(chan struct{}), stop: make(chan struct{}), stopped: make(chan struct{})}
}

// hold records l as held until it ends.
func (s *Store) hold(l *Lease) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if s.held == nil {
		s.held = map[*Lease]struct{}{}
	}
	s.held[l] = struct{}{}
}

func (s *Store) unhold(l *Lease) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	delete(s.held, l)
}

// releaseAll releases the leases still held, when the store closes.
func (s *Store) releaseAll() {
	s.heldMu.Lock()
	held := make([]*Lease, 0, len(s.held))
	for l := range s.held {
		held = append(held, l)
	}
	s.heldMu.Unlock()
	for _, l := range held {
		l.Release()
	}
}

// lockLocal is SQLite's lease: exclusive within the process.
func (s *Store) lockLocal(name string) (*Lease, bool, error) {
	s.heldMu.Lock()
	if s.local[name] {
		s.heldMu.Unlock()
		return nil, false, nil
	}
	if s.local == nil {
		s.local = map[string]bool{}
	}
	s.local[name] = true
	s.heldMu.Unlock()
	l := newLease(name)
	s.hold(l)
	go func() {
		<-l.stop
		s.heldMu.Lock()
		delete(s.local, name)
		s.heldMu.Unlock()
		s.unhold(l)
		close(l.lost)
		close(l.stopped)
	}()
	return l, true, nil
}

// lockPostgres takes the advisory lock of name on a connection of its
// own and keeps the connection, checking it, until the lease ends.
func (s *Store) lockPostgres(ctx context.Context, name string, wait bool) (*Lease, bool, error) {
	conn, err := s.leases.Conn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lead %s: connect: %w", name, err)
	}
	key := lockKey(name)
	ok := true
	if wait {
		_, err = conn.ExecContext(ctx, `SELECT pg_advisory_lock(?)`, key)
	} else {
		err = conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(?)`, key).Scan(&ok)
	}
	if err != nil || !ok {
		// A lock taken as ctx ended may be held: drop the session.
		discard(conn)
		if err != nil {
			return nil, false, fmt.Errorf("lead %s: %w", name, err)
		}
		return nil, false, nil
	}
	l := newLease(name)
	s.hold(l)
	go s.keep(l, conn, key)
	return l, true, nil
}

// keep pings the lease's connection until the lease is released or the
// connection fails, then lets the lock go.
func (s *Store) keep(l *Lease, conn *sql.Conn, key int64) {
	defer close(l.stopped)
	defer s.unhold(l)
	tick := time.NewTicker(leasePing)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			close(l.lost)
			ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
			var unlocked bool
			err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock(?)`, key).Scan(&unlocked)
			cancel()
			if err != nil || !unlocked {
				discard(conn)
				return
			}
			conn.Close()
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
			err := conn.PingContext(ctx)
			cancel()
			if err != nil {
				close(l.lost)
				discard(conn)
				return
			}
		}
	}
}

// discard closes conn's session rather than returning it to the pool:
// PostgreSQL then releases whatever locks it held.
func discard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}
