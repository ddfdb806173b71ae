package logging

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records what it is given and how many writes did it.
type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	delay  time.Duration
	err    error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.err != nil {
		return 0, c.err
	}
	return c.buf.Write(p)
}

func TestWriterKeepsEveryLineInOrder(t *testing.T) {
	out := &countingWriter{delay: 50 * time.Microsecond}
	w := NewWriter(out)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				if _, err := fmt.Fprintf(w, "g%d line %d\n", g, i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(out.buf.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines written, want %d", len(got), writers*lines)
	}
	next := make([]int, writers)
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d line %d", &g, &i); err != nil {
			t.Fatalf("torn line %q", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if out.writes >= writers*lines {
		t.Errorf("%d writes for %d lines: nothing was batched", out.writes, writers*lines)
	}
	t.Logf("%d lines in %d writes", writers*lines, out.writes)
}

func TestWriterWritesPromptly(t *testing.T) {
	out := &countingWriter{}
	w := NewWriter(out)
	defer w.Close()
	io.WriteString(w, "one line\n")
	deadline := time.Now().Add(5 * time.Second)
	for {
		out.mu.Lock()
		got := out.buf.String()
		out.mu.Unlock()
		if got == "one line\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a lone line was not written without Close: %q", got)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWriterError(t *testing.T) {
	boom := errors.New("disk full")
	w := NewWriter(&countingWriter{err: boom})
	io.WriteString(w, "lost\n")
	if err := w.Close(); !errors.Is(err, boom) {
		t.Errorf("Close: %v, want the write error", err)
	}
	if _, err := io.WriteString(w, "after\n"); err == nil {
		t.Error("Write after Close succeeded")
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Errorf("second Close: %v, want the write error again", err)
	}
}

// TestWriterBackpressure: a writer that cannot keep up slows Write down
// instead of buffering without bound.
func TestWriterBackpressure(t *testing.T) {
	block := make(chan struct{})
	out := &blockingWriter{release: block}
	w := NewWriter(out)
	line := bytes.Repeat([]byte("x"), 64<<10)
	wrote := make(chan int)
	go func() {
		n := 0
		for range 64 { // 4 MiB, four times maxPending
			if _, err := w.Write(line); err != nil {
				break
			}
			n++
		}
		wrote <- n
	}()
	select {
	case n := <-wrote:
		t.Fatalf("%d writes of 64 KiB went through a writer that writes nothing", n)
	case <-time.After(200 * time.Millisecond):
	}
	close(block)
	if n := <-wrote; n != 64 {
		t.Errorf("%d of 64 writes once the writer moved, want all", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if out.n != 64*len(line) {
		t.Errorf("%d bytes written, want %d", out.n, 64*len(line))
	}
}

type blockingWriter struct {
	release chan struct{}
	n       int
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	<-b.release
	b.n += len(p)
	return len(p), nil
}
