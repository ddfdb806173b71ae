// Package lifecycle is the machine state machine: the one place that says
// which operations are legal in which state and where they lead.
package lifecycle

import "fmt"

// State is where a machine is in its lifecycle.
type State string

// The machine states.
const (
	Registered     State = "registered"
	Attested       State = "attested"
	Provisioned    State = "provisioned"
	Decommissioned State = "decommissioned"
)

// States lists every state in lifecycle order.
func States() []State { return []State{Registered, Attested, Provisioned, Decommissioned} }

// ParseState returns the state named s, or an error naming the valid ones.
func ParseState(s string) (State, error) {
	for _, st := range States() {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown state %q: want one of registered, attested, provisioned, decommissioned", s)
}

// Op is something that happens to a machine.
type Op string

// The operations on a machine.
const (
	// Attest: the agent proved the machine's identity with its TPM.
	Attest Op = "attest"
	// Approve: an operator (or a matching pre-registration) approved it.
	Approve Op = "approve"
	// Configure: the agent fetched its one-time config.
	Configure Op = "configure"
	// Revoke: an operator decommissioned it.
	Revoke Op = "revoke"
	// Reinstate: an operator lifted a decommissioned machine's tombstone.
	Reinstate Op = "reinstate"
	// SetRole: an operator changed its role.
	SetRole Op = "set_role"
	// Heartbeat: the agent reported in.
	Heartbeat Op = "heartbeat"
	// IssueCertificate: the agent got a node certificate (or renewed it).
	IssueCertificate Op = "issue_certificate"
)

// Ops lists every operation.
func Ops() []Op {
	return []Op{Attest, Approve, Configure, Revoke, Reinstate, SetRole, Heartbeat, IssueCertificate}
}

// transitions maps (state, op) to the next state. A missing pair is illegal.
var transitions = map[State]map[Op]State{
	Registered: {
		Attest:  Attested,
		Revoke:  Decommissioned,
		SetRole: Registered,
	},
	Attested: {
		// Re-attesting (every boot) keeps an attested machine attested.
		Attest:           Attested,
		Approve:          Provisioned,
		Revoke:           Decommissioned,
		SetRole:          Attested,
		Heartbeat:        Attested,
		IssueCertificate: Attested,
	},
	Provisioned: {
		// A provisioned machine re-attests on every boot and stays provisioned.
		Attest:           Provisioned,
		Configure:        Provisioned,
		Revoke:           Decommissioned,
		SetRole:          Provisioned,
		Heartbeat:        Provisioned,
		IssueCertificate: Provisioned,
	},
	Decommissioned: {
		Reinstate: Registered,
	},
}

// TransitionError says an operation is not allowed in a machine's state.
type TransitionError struct {
	From State
	Op   Op
}

func (e *TransitionError) Error() string {
	switch {
	case e.Op == IssueCertificate && e.From == Decommissioned:
		return "cannot issue a node certificate: machine is decommissioned; an operator must reinstate it, then it must attest again"
	case e.Op == IssueCertificate:
		return fmt.Sprintf("cannot issue a node certificate: machine is %s; it gets one once attested", e.From)
	case e.From == Decommissioned && e.Op == Revoke:
		return "cannot revoke: machine is already decommissioned"
	case e.From == Decommissioned:
		return fmt.Sprintf("cannot %s: machine is decommissioned; reinstate it first", e.Op)
	case e.Op == Approve && e.From == Registered:
		return "cannot approve: machine is registered and has not attested yet; it can be approved once attested"
	case e.Op == Approve && e.From == Provisioned:
		return "cannot approve: machine is already provisioned"
	case e.Op == Reinstate:
		return fmt.Sprintf("cannot reinstate: machine is %s, not decommissioned", e.From)
	}
	return fmt.Sprintf("cannot %s: machine is %s", e.Op, e.From)
}

// Next returns the state a machine in state from moves to under op, or a
// *TransitionError when op is illegal there.
func Next(from State, op Op) (State, error) {
	if to, ok := transitions[from][op]; ok {
		return to, nil
	}
	return "", &TransitionError{From: from, Op: op}
}
