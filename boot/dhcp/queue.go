package dhcp

// queue is a bounded FIFO that, when full, drops its oldest entry to make
// room: under a boot storm the newest requests are the ones whose clients
// are still waiting.
type queue[T any] struct {
	ch      chan T
	dropped func()
}

func newQueue[T any](size int, dropped func()) *queue[T] {
	return &queue[T]{ch: make(chan T, size), dropped: dropped}
}

// push never blocks.
func (q *queue[T]) push(v T) {
	for {
		select {
		case q.ch <- v:
			return
		default:
		}
		select {
		case <-q.ch:
			q.dropped()
		default:
		}
	}
}
