// Package audit is the vocabulary of the operator audit trail: who acted
// (an Actor), in which request (its ID), and what they did (a Record
// naming an action and how it ended).
//
// The API gives every request an ID and, once the caller is
// authenticated, records the caller as the request's actor in its
// context. The services that change state read both from the context: a
// change an operator asked for writes its Record in the same store
// transaction as the change, and every event it emits names the actor. A
// refused action is recorded by the API in a transaction of its own. A
// context without an actor (an agent's request, the sweeper, an event
// handler) writes no record and emits events without an actor.
package audit

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Actor is the operator who acted.
type Actor struct {
	// Subject identifies the operator: the token's "sub", or
	// "admin-token" for the static admin token.
	Subject string `json:"subject"`
	// Name is what people call the operator.
	Name string `json:"name"`
}

// Record is one line of the audit trail.
type Record struct {
	// ID orders the records in commit order (set by the store).
	ID        int64
	Time      time.Time
	Actor     Actor
	Action    string
	MachineID string // "" when the action is about no one machine
	RequestID string
	// Result is ResultOK, or the error's code and message
	// ("not_found: machine ... not found").
	Result string
	// Detail says briefly what was asked: the role set, the revoke
	// reason (key=value pairs, see Detail).
	Detail string
}

// ResultOK is the Result of an action that succeeded.
const ResultOK = "ok"

// The actions of the core. An extension's mutating route is recorded as
// "<extension> <METHOD> <pattern>", like "tags POST /machines/{machine_id}/tags".
const (
	MachineRegister  = "machine.register"
	MachineApprove   = "machine.approve"
	MachineRevoke    = "machine.revoke"
	MachineSetRole   = "machine.set_role"
	MachineReinstate = "machine.reinstate"
	ConfigSet        = "config.set"
	ConfigDelete     = "config.delete"
	SchematicCreate  = "schematic.create"
	ImageBuild       = "image.build"
)

// Actions lists the core's actions, for completion and documentation.
func Actions() []string {
	return []string{
		MachineRegister, MachineApprove, MachineRevoke, MachineSetRole, MachineReinstate,
		ConfigSet, ConfigDelete, SchematicCreate, ImageBuild,
	}
}

// Detail joins key/value pairs as "k1=v1 k2=v2", leaving out empty
// values and quoting values with spaces, quotes or "=".
func Detail(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if v == "" {
			continue
		}
		if strings.ContainsAny(v, " \t\n\"=") || v != strings.TrimSpace(v) {
			v = strconv.Quote(v)
		}
		parts = append(parts, kv[i]+"="+v)
	}
	return strings.Join(parts, " ")
}

// request is what a context knows of the request it serves. The actor is
// filled in when the caller is authenticated, which happens after the
// request's context was made, deeper in the call.
type request struct {
	id    string
	actor atomic.Pointer[Actor]
}

type requestKey struct{}

func requestFrom(ctx context.Context) *request {
	r, _ := ctx.Value(requestKey{}).(*request)
	return r
}

// WithRequestID returns ctx carrying a request with the given ID and, as
// yet, no actor.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestKey{}, &request{id: id})
}

// RequestID returns the ID of the request ctx serves ("" outside one).
func RequestID(ctx context.Context) string {
	if r := requestFrom(ctx); r != nil {
		return r.id
	}
	return ""
}

// SetActor records a as the actor of the request ctx serves, once it is
// authenticated; outside a request it does nothing. Authentication sets
// it even when the caller then lacks the role, so that the refusal is
// recorded with its actor.
func SetActor(ctx context.Context, a Actor) {
	if r := requestFrom(ctx); r != nil {
		r.actor.Store(&a)
	}
}

// WithActor returns ctx carrying a as its actor, keeping the request ID
// ctx carries: for acting as an operator outside an API request.
func WithActor(ctx context.Context, a Actor) context.Context {
	r := &request{id: RequestID(ctx)}
	r.actor.Store(&a)
	return context.WithValue(ctx, requestKey{}, r)
}

// ActorFrom returns the actor of the request ctx serves, if it has one.
func ActorFrom(ctx context.Context) (Actor, bool) {
	r := requestFrom(ctx)
	if r == nil {
		return Actor{}, false
	}
	if a := r.actor.Load(); a != nil {
		return *a, true
	}
	return Actor{}, false
}
