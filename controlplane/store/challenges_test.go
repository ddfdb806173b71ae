package store_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/store"
)

func useChallenge(t *testing.T, st *store.Store, id []byte, expires time.Time) error {
	t.Helper()
	_, err := st.Update(t.Context(), func(tx *store.Tx) error { return tx.UseChallenge(t.Context(), id, expires) })
	return err
}

func usedChallenges(t *testing.T, st *store.Store) int {
	t.Helper()
	var n int
	if err := st.ReadDB().QueryRowContext(t.Context(), `SELECT count(*) FROM used_challenges`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUseChallenge(t *testing.T) { forEachEngine(t, testUseChallenge) }

func testUseChallenge(t *testing.T, b backend) {
	st := b.fresh(t)
	expires := time.Now().Add(time.Minute)
	one, two := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)
	if err := useChallenge(t, st, one, expires); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := useChallenge(t, st, one, expires); !errors.Is(err, store.ErrUsed) {
		t.Errorf("second use: %v, want ErrUsed", err)
	}
	if err := useChallenge(t, st, two, expires); err != nil {
		t.Errorf("another challenge: %v", err)
	}
	// In a transaction that fails, the use goes with it.
	three := bytes.Repeat([]byte{3}, 16)
	boom := errors.New("boom")
	_, err := st.Update(t.Context(), func(tx *store.Tx) error {
		if err := tx.UseChallenge(t.Context(), three, expires); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := useChallenge(t, st, three, expires); err != nil {
		t.Errorf("use after a rolled-back use: %v", err)
	}
	if n := usedChallenges(t, st); n != 3 {
		t.Errorf("%d used challenges, want 3", n)
	}
}

// TestUseChallengeConcurrently: of concurrent uses of one challenge, in
// one group commit or several, one succeeds.
func TestUseChallengeConcurrently(t *testing.T) { forEachEngine(t, testUseChallengeConcurrently) }

func testUseChallengeConcurrently(t *testing.T, b backend) {
	st := b.fresh(t)
	id, expires := bytes.Repeat([]byte{9}, 16), time.Now().Add(time.Minute)
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		wins, used int
	)
	for range 20 {
		wg.Go(func() {
			err := useChallenge(t, st, id, expires)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrUsed):
				used++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || used != 19 {
		t.Errorf("%d uses succeeded and %d were refused as used, want 1 and 19", wins, used)
	}
}

// TestDeleteStaleCredentialsUsedChallenges: used challenges go once
// expired before the cutoff, not before.
func TestDeleteStaleCredentialsUsedChallenges(t *testing.T) {
	forEachEngine(t, testDeleteStaleCredentialsUsedChallenges)
}

func testDeleteStaleCredentialsUsedChallenges(t *testing.T, b backend) {
	st := b.fresh(t)
	now := time.Now()
	old, recent := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)
	if err := useChallenge(t, st, old, now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := useChallenge(t, st, recent, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	var n int64
	_, err := st.Update(t.Context(), func(tx *store.Tx) error {
		var err error
		n, err = tx.DeleteStaleCredentials(t.Context(), now.Add(-time.Hour), now.Add(-7*24*time.Hour))
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("deleted %d rows (%v), want 1", n, err)
	}
	if err := useChallenge(t, st, recent, now.Add(-time.Minute)); !errors.Is(err, store.ErrUsed) {
		t.Errorf("the recent one after the sweep: %v, want ErrUsed (kept)", err)
	}
	if got := usedChallenges(t, st); got != 1 {
		t.Errorf("%d used challenges left, want 1", got)
	}
}
