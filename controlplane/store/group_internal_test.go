package store

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
)

// TestGroupCommitOnOneCore: on one core (GOMAXPROCS 1, as the daemon runs
// when pinned to a CPU), updates under way together commit as one group,
// not one transaction (and one fsync) each. The first update's send wakes
// the committer ahead of the goroutines already runnable; unless it lets
// them run before it closes the group, it commits that update alone.
func TestGroupCommitOnOneCore(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "attestation.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	insert := func(i int) error {
		_, err := s.Update(ctx, func(tx *Tx) error {
			m := &Machine{EKFingerprint: fmt.Sprintf("%064x", i), State: lifecycle.Registered}
			if err := tx.InsertMachine(ctx, m); err != nil {
				return err
			}
			return tx.Emit(ctx, m, &events.Registered{})
		})
		return err
	}
	const n = 20
	before := s.groups.Load()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	// Runnable, not yet run: this goroutine keeps the one core until its
	// own update below.
	for i := 1; i < n; i++ {
		wg.Go(func() { errs <- insert(i) })
	}
	errs <- insert(0)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if groups := s.groups.Load() - before; groups != 1 {
		t.Errorf("%d updates under way together committed in %d groups, want 1", n, groups)
	}
}
