package api

import (
	"context"
	"net/http"
)

// HoldFlushes serves a streaming procedure whose streams are most often
// answered at once, one message and then the end, as WatchApproval's is
// for a machine approved when it attests. Connect flushes the response
// after every message and again after the end of the stream, and the
// server writes the end of the body once the handler returns: three
// writes to the socket, each waking the client. Under HoldFlushes the
// flushes the handler asks for are held until it calls FlushHeld, which
// it does before it waits for something to send, or until it returns,
// when the server writes all of it at once.
func HoldFlushes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &heldFlushes{ResponseWriter: w}
		next.ServeHTTP(hw, r.WithContext(context.WithValue(r.Context(), heldFlushesKey{}, hw)))
	})
}

// FlushHeld writes what a handler under HoldFlushes has sent so far; the
// handler calls it before it waits. Under any other handler it does
// nothing.
func FlushHeld(ctx context.Context) {
	if hw, ok := ctx.Value(heldFlushesKey{}).(*heldFlushes); ok && hw.pending {
		hw.pending = false
		http.NewResponseController(hw.ResponseWriter).Flush()
	}
}

type heldFlushesKey struct{}

// heldFlushes is a ResponseWriter whose Flush only notes that one is due.
// It is used by the handler's goroutine alone.
type heldFlushes struct {
	http.ResponseWriter
	pending bool
}

func (w *heldFlushes) Flush() { w.pending = true }

func (w *heldFlushes) Unwrap() http.ResponseWriter { return w.ResponseWriter }
