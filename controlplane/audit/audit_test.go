package audit_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/attestation/attestation/controlplane/audit"
)

func TestRequestIDs(t *testing.T) {
	for _, c := range []struct {
		name, sent string
		kept       bool
	}{
		{"a UUID", "0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a", true},
		{"letters, digits and -_.:", "deploy-42_retry.1:a", true},
		{"the longest", strings.Repeat("a", 128), true},
		{"none", "", false},
		{"too long", strings.Repeat("a", 129), false},
		{"a space", "change 4711", false},
		{"a line break", "x\nforged: header", false},
		{"not ASCII", "änderung", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var inside string
			var actor bool
			h := audit.RequestIDs(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				inside = audit.RequestID(r.Context())
				_, actor = audit.ActorFrom(r.Context())
			}))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if c.sent != "" {
				req.Header.Set(audit.Header, c.sent)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Get(audit.Header)
			if got != inside {
				t.Errorf("answered %q, the context had %q; want the same", got, inside)
			}
			if c.kept && got != c.sent {
				t.Errorf("got %q, want the caller's %q", got, c.sent)
			}
			if _, err := uuid.Parse(got); !c.kept && err != nil {
				t.Errorf("got %q, want a new UUID in place of %q", got, c.sent)
			}
			if actor {
				t.Error("a request has an actor before it is authenticated")
			}
		})
	}
}

func TestActor(t *testing.T) {
	if _, ok := audit.ActorFrom(context.Background()); ok {
		t.Error("got an actor outside a request")
	}
	audit.SetActor(context.Background(), audit.Actor{Subject: "x"}) // outside a request: nothing to do
	ctx := audit.WithRequestID(context.Background(), "r1")
	// Authentication happens deeper in the call, on a derived context; the
	// request's context sees it.
	audit.SetActor(context.WithValue(ctx, struct{}{}, 1), audit.Actor{Subject: "s1", Name: "alice"})
	if a, ok := audit.ActorFrom(ctx); !ok || a.Name != "alice" || audit.RequestID(ctx) != "r1" {
		t.Errorf("got %v, %v, request %q; want alice in r1", a, ok, audit.RequestID(ctx))
	}
	bob := audit.WithActor(ctx, audit.Actor{Subject: "s2", Name: "bob"})
	if a, _ := audit.ActorFrom(bob); a.Name != "bob" || audit.RequestID(bob) != "r1" {
		t.Errorf("WithActor: got %v in %q, want bob in r1", a, audit.RequestID(bob))
	}
	if a, _ := audit.ActorFrom(ctx); a.Name != "alice" {
		t.Errorf("WithActor changed the parent's actor to %v", a)
	}
}

func TestDetail(t *testing.T) {
	for _, c := range []struct {
		kv   []string
		want string
	}{
		{[]string{"role", "worker", "hostname", "node-1"}, "role=worker hostname=node-1"},
		{[]string{"role", "", "hostname", "node-1"}, "hostname=node-1"},
		{[]string{"reason", "disk failed"}, `reason="disk failed"`},
		{[]string{"reason", `a "b"=c`}, `reason="a \"b\"=c"`},
		{nil, ""},
	} {
		if got := audit.Detail(c.kv...); got != c.want {
			t.Errorf("Detail(%q): got %q, want %q", c.kv, got, c.want)
		}
	}
}
