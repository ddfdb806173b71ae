package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// logs records the agent's log lines so that the test can wait for steps.
type logs struct {
	t       *testing.T
	mu      sync.Mutex
	records []map[string]string
	changed chan struct{}
}

func newLogs(t *testing.T) *logs {
	l := &logs{t: t, changed: make(chan struct{})}
	t.Cleanup(func() {
		l.mu.Lock()
		l.t = nil
		l.mu.Unlock()
	})
	return l
}

func (l *logs) logger() *slog.Logger { return slog.New(&logHandler{l: l}) }

type logHandler struct {
	l     *logs
	attrs []slog.Attr
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *logHandler) WithGroup(string) slog.Handler            { return h }
func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{l: h.l, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := map[string]string{"msg": r.Message, "level": r.Level.String()}
	line := []string{r.Level.String(), fmt.Sprintf("msg=%q", r.Message)}
	add := func(a slog.Attr) bool {
		rec[a.Key] = a.Value.String()
		line = append(line, a.Key+"="+a.Value.String())
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	l := h.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		l.t.Log("agent: " + strings.Join(line, " "))
	}
	l.records = append(l.records, rec)
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

// all returns every record so far.
func (l *logs) all() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]map[string]string(nil), l.records...)
}

// wait returns the n-th (1-based) record with message msg, waiting up to
// timeout for it.
func (l *logs) wait(msg string, n int, timeout time.Duration) map[string]string {
	l.t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		seen := 0
		for _, r := range l.records {
			if r["msg"] == msg {
				if seen++; seen == n {
					l.mu.Unlock()
					return r
				}
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			l.t.Fatalf("no log line %q (#%d) within %s", msg, n, timeout)
		}
	}
}

func (l *logs) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}
