package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff spaces out retries: the wait doubles from Min up to Max, and half
// of it is random so that a rack of machines that lost the control plane
// together does not come back in lockstep.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before retry n (0 for the first). rnd returns a
// number in [0, 1); nil uses math/rand.
func (b Backoff) Delay(n int, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d/2 + time.Duration(rnd()*float64(d/2))
}

// retrier counts consecutive failures of one kind of work.
type retrier struct {
	b Backoff
	n int
}

// wait sleeps for the next delay; it returns false when ctx is done first.
func (r *retrier) wait(ctx context.Context) bool {
	d := r.next()
	return sleep(ctx, d)
}

// next returns the next delay and counts the failure.
func (r *retrier) next() time.Duration {
	d := r.b.Delay(r.n, nil)
	r.n++
	return d
}

// reset starts over after a success.
func (r *retrier) reset() { r.n = 0 }

// jitter spreads d by ±frac, for periodic work such as heartbeats.
func jitter(d time.Duration, frac float64, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	return time.Duration(float64(d) * (1 - frac + 2*frac*rnd()))
}

// sleep waits for d or until ctx is done; it reports whether d passed.
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
