// Package logging holds the daemon's log writer: log lines are handed to
// a goroutine that writes whatever has accumulated in one write(2), so a
// burst of lines (a DHCP boot storm logs every offer and every ack) costs
// a system call per burst instead of one per line, and a request never
// waits on the log's file or pipe.
package logging

import (
	"io"
	"sync"
)

// maxPending bounds the bytes waiting to be written: past it, Write waits
// for the writer goroutine, so a log that cannot keep up slows its callers
// down rather than growing without bound or losing lines.
const maxPending = 1 << 20

// Writer writes to an io.Writer from a goroutine of its own, in the order
// of the calls to Write. A line is written as soon as the goroutine runs,
// together with the lines that arrived meanwhile; Close writes what is
// left. A process killed outright loses only lines not yet written, the
// ones of the last moments.
type Writer struct {
	w io.Writer

	mu      sync.Mutex
	pending []byte
	spare   []byte
	closed  bool
	err     error // the first write error
	wake    chan struct{}
	drained *sync.Cond // signalled when a batch has been written
	done    chan struct{}
}

// NewWriter starts a Writer on w.
func NewWriter(w io.Writer) *Writer {
	lw := &Writer{w: w, wake: make(chan struct{}, 1), done: make(chan struct{})}
	lw.drained = sync.NewCond(&lw.mu)
	go lw.run()
	return lw
}

// Write queues a copy of p. It returns an error only after Close, or
// when an earlier write to the underlying writer failed.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for len(lw.pending) >= maxPending && !lw.closed && lw.err == nil {
		lw.drained.Wait()
	}
	if lw.closed {
		return 0, io.ErrClosedPipe
	}
	if lw.err != nil {
		return 0, lw.err
	}
	lw.pending = append(lw.pending, p...)
	select {
	case lw.wake <- struct{}{}:
	default: // already woken
	}
	return len(p), nil
}

func (lw *Writer) run() {
	defer close(lw.done)
	for range lw.wake {
		if !lw.flush() {
			return
		}
	}
}

// flush writes what is pending; it reports false once the Writer is
// closed and drained.
func (lw *Writer) flush() bool {
	lw.mu.Lock()
	for len(lw.pending) > 0 {
		batch := lw.pending
		lw.pending, lw.spare = lw.spare[:0], nil
		lw.mu.Unlock()
		_, err := lw.w.Write(batch)
		lw.mu.Lock()
		if err != nil && lw.err == nil {
			lw.err = err
		}
		if cap(batch) <= maxPending {
			lw.spare = batch[:0]
		}
		lw.drained.Broadcast()
	}
	closed := lw.closed
	lw.mu.Unlock()
	return !closed
}

// Close writes what is pending, stops the goroutine and returns the first
// error writing met. Later Writes fail.
func (lw *Writer) Close() error {
	lw.mu.Lock()
	if lw.closed {
		lw.mu.Unlock()
		<-lw.done
		return lw.err
	}
	lw.closed = true
	lw.drained.Broadcast()
	lw.mu.Unlock()
	select {
	case lw.wake <- struct{}{}:
	default:
	}
	<-lw.done
	return lw.err
}
