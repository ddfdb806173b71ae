package logging

import (
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	e := Every{Interval: time.Second}
	t0 := time.Now()
	for _, step := range []struct {
		at      time.Duration
		ok      bool
		skipped int
	}{
		{0, true, 0},
		{100 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{1500 * time.Millisecond, false, 0},
		{3 * time.Second, true, 1},
		{5 * time.Second, true, 0},
	} {
		skipped, ok := e.Allow(t0.Add(step.at))
		if ok != step.ok || skipped != step.skipped {
			t.Errorf("at %v: Allow = %d, %v; want %d, %v", step.at, skipped, ok, step.skipped, step.ok)
		}
	}
}
