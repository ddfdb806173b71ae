package store

import (
	"context"
	"fmt"
)

// Synchronous returns SQLite's synchronous setting on the write
// connection, as SQLite reports it (PRAGMA synchronous): 0 OFF, 1 NORMAL,
// 2 FULL (the WAL fsynced at every commit, what Open sets), 3 EXTRA. The
// setting belongs to the connection, not to the file, so only the process
// that holds the connection can tell; /metrics shows it, for a monitor or
// a benchmark that must know its commits were made durable. On
// PostgreSQL it is 2 while synchronous_commit waits for the WAL's flush
// (anything but off), else 0.
func (s *Store) Synchronous(ctx context.Context) (int, error) {
	if s.d.engine == PostgreSQL {
		return postgresSynchronous(ctx, s)
	}
	var n int
	if err := s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read the synchronous setting of %s: %w", s.path, err)
	}
	return n, nil
}
