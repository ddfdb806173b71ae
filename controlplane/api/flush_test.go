package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHoldFlushes: under HoldFlushes a handler's flushes wait for
// FlushHeld, which flushes once; elsewhere FlushHeld does nothing.
func TestHoldFlushes(t *testing.T) {
	rec := httptest.NewRecorder()
	HoldFlushes(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("message"))
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if rec.Flushed {
			t.Error("the flush went through before FlushHeld")
		}
		FlushHeld(r.Context())
		if !rec.Flushed {
			t.Error("FlushHeld did not flush what was held")
		}
	})).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))

	plain := httptest.NewRecorder()
	http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("message"))
		FlushHeld(r.Context())
	}).ServeHTTP(plain, httptest.NewRequest(http.MethodGet, "/", nil))
	if plain.Flushed {
		t.Error("FlushHeld flushed a response outside HoldFlushes")
	}
}
