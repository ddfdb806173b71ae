package agentapi

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/store"
)

func TestChallenges(t *testing.T) {
	var cs challenges
	now := time.Now()
	for i := range 3 {
		c := &challenge{id: fmt.Sprint("c", i), machineID: "m", expires: now.Add(time.Duration(i+1) * time.Minute)}
		if err := cs.add(c, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.take("nope", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("take of an unknown challenge: %v, want ErrNotFound", err)
	}
	if c, err := cs.take("c0", now); err != nil || c.id != "c0" {
		t.Fatalf("take: %v, %v", c, err)
	}
	// Once: the second take is a replay, and says whose challenge it was.
	if c, err := cs.take("c0", now); !errors.Is(err, store.ErrUsed) || c == nil || c.machineID != "m" {
		t.Errorf("second take: %v, %v, want ErrUsed with the challenge", c, err)
	}
	// Past its expiry: refused, and spent.
	later := now.Add(150 * time.Second)
	if _, err := cs.take("c1", later); !errors.Is(err, store.ErrExpired) {
		t.Errorf("take after expiry: %v, want ErrExpired", err)
	}
	if _, err := cs.take("c1", later); !errors.Is(err, store.ErrUsed) {
		t.Errorf("take of an expired, taken challenge: %v, want ErrUsed", err)
	}
	// Adding prunes what has expired, used or not.
	if err := cs.add(&challenge{id: "c3", expires: later.Add(time.Minute)}, later); err != nil {
		t.Fatal(err)
	}
	if n := cs.len(); n != 2 {
		t.Errorf("%d challenges held after pruning, want 2 (c2, c3)", n)
	}
	if _, err := cs.take("c0", later); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("take of a pruned challenge: %v, want ErrNotFound", err)
	}
}

func TestChallengesConcurrentTake(t *testing.T) {
	var cs challenges
	now := time.Now()
	if err := cs.add(&challenge{id: "c", expires: now.Add(time.Minute)}, now); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := cs.take("c", now); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of 50 concurrent takes succeeded, want 1", wins)
	}
}

func TestChallengesFull(t *testing.T) {
	cs := challenges{max: 1000, perSource: 400}
	now := time.Now()
	srcs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")}
	for i := range 1000 {
		c := &challenge{id: fmt.Sprint(i), source: srcs[i%3], expires: now.Add(time.Minute)}
		if i >= 999 {
			c.source = srcs[2]
		}
		if err := cs.add(c, now); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if err := cs.add(&challenge{id: "one more", source: netip.MustParseAddr("10.0.0.9"), expires: now.Add(time.Minute)}, now); !errors.Is(err, errTooManyChallenges) {
		t.Fatalf("add to a full table: %v, want errTooManyChallenges", err)
	}
	// Taking one (the agent answered) makes room; a used one is no
	// longer outstanding, though it stays to refuse a replay.
	if _, err := cs.take("0", now); err != nil {
		t.Fatal(err)
	}
	if err := cs.add(&challenge{id: "one more", source: netip.MustParseAddr("10.0.0.9"), expires: now.Add(time.Minute)}, now); err != nil {
		t.Fatalf("add after a take: %v", err)
	}
	// Once they expire there is room again.
	if err := cs.add(&challenge{id: "later", expires: now.Add(2 * time.Minute)}, now.Add(time.Minute)); err != nil {
		t.Fatalf("add after expiry: %v", err)
	}
	if n := cs.len(); n != 1 {
		t.Errorf("%d held, want 1", n)
	}
	if cs.open != 1 || len(cs.bySource) != 1 {
		t.Errorf("after expiry: %d open, %d sources, want 1 and 1", cs.open, len(cs.bySource))
	}
}

func TestChallengesPerSource(t *testing.T) {
	cs := challenges{max: 100, perSource: 3}
	now := time.Now()
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::")
	for i := range 3 {
		if err := cs.add(&challenge{id: fmt.Sprint("a", i), source: a, expires: now.Add(time.Minute)}, now); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	err := cs.add(&challenge{id: "a3", source: a, expires: now.Add(time.Minute)}, now)
	if !errors.Is(err, errTooManySourceChallenges) {
		t.Fatalf("a fourth from one source: %v, want errTooManySourceChallenges", err)
	}
	if err := cs.check(a, now); !errors.Is(err, errTooManySourceChallenges) {
		t.Errorf("check of the full source: %v, want errTooManySourceChallenges", err)
	}
	// Another source is not held back.
	if err := cs.add(&challenge{id: "b0", source: b, expires: now.Add(time.Minute)}, now); err != nil {
		t.Errorf("another source: %v", err)
	}
	// A used challenge frees its source's place, even a failed take.
	if _, err := cs.take("a0", now); err != nil {
		t.Fatal(err)
	}
	if err := cs.check(a, now); err != nil {
		t.Errorf("after a take: %v", err)
	}
}
