package lifecycle

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestNext(t *testing.T) {
	// Every (state, op) pair, legal or not, with its expected outcome.
	want := map[State]map[Op]State{
		Registered:     {Attest: Attested, Revoke: Decommissioned, SetRole: Registered},
		Attested:       {Attest: Attested, Approve: Provisioned, Revoke: Decommissioned, SetRole: Attested, Heartbeat: Attested, IssueCertificate: Attested},
		Provisioned:    {Attest: Provisioned, Configure: Provisioned, Revoke: Decommissioned, SetRole: Provisioned, Heartbeat: Provisioned, IssueCertificate: Provisioned},
		Decommissioned: {Reinstate: Registered},
	}
	for _, from := range States() {
		for _, op := range Ops() {
			t.Run(fmt.Sprintf("%s/%s", from, op), func(t *testing.T) {
				got, err := Next(from, op)
				wantTo, legal := want[from][op]
				if legal {
					if err != nil || got != wantTo {
						t.Fatalf("Next(%s, %s) = %q, %v; want %q, nil", from, op, got, err, wantTo)
					}
					return
				}
				var te *TransitionError
				if !errors.As(err, &te) {
					t.Fatalf("Next(%s, %s) = %q, %v; want a *TransitionError", from, op, got, err)
				}
				if te.From != from || te.Op != op {
					t.Errorf("error = %+v; want From=%s Op=%s", te, from, op)
				}
				if !strings.Contains(err.Error(), string(from)) {
					t.Errorf("error %q does not name the current state %s", err, from)
				}
			})
		}
	}
}

func TestParseState(t *testing.T) {
	for _, s := range States() {
		if got, err := ParseState(string(s)); err != nil || got != s {
			t.Errorf("ParseState(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "Registered", "pending", "provisioned "} {
		if _, err := ParseState(bad); err == nil {
			t.Errorf("ParseState(%q) succeeded; want an error", bad)
		}
	}
}
