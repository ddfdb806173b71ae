package logging

import (
	"sync"
	"time"
)

// Every spaces out a log line that a flood could repeat (a refused
// request, a full table): it lets one through per Interval and counts the
// ones in between, so that the next line can say how many were left out
// while the flood does not become a flood of lines. The zero Interval
// lets every one through.
type Every struct {
	Interval time.Duration

	mu      sync.Mutex
	next    time.Time
	skipped int
}

// Allow reports whether to log now and, if so, how many were not logged
// since the last line.
func (e *Every) Allow(now time.Time) (skipped int, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.next) {
		e.skipped++
		return 0, false
	}
	skipped, e.skipped, e.next = e.skipped, 0, now.Add(e.Interval)
	return skipped, true
}
