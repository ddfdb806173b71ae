package agentapi

import (
	"net/netip"
	"testing"
	"time"

	"connectrpc.com/connect"
)

func TestSource(t *testing.T) {
	for _, tt := range []struct{ ip, want string }{
		{"10.0.0.5", "10.0.0.5"},
		{"::ffff:10.0.0.5", "10.0.0.5"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::"},
		{"not an address", "invalid IP"},
	} {
		if got := source(tt.ip).String(); got != tt.want {
			t.Errorf("source(%q) = %s, want %s", tt.ip, got, tt.want)
		}
	}
}

func TestRegisterRate(t *testing.T) {
	a := newAdmission(Limits{RegisterRate: 2, RegisterBurst: 3}, nil)
	now := time.Now()
	one, two := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for i := range 3 {
		if err := a.allowRegister(one, now); err != nil {
			t.Fatalf("call %d of the burst: %v", i, err)
		}
	}
	err := a.allowRegister(one, now)
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("past the burst: %v, want resource_exhausted", err)
	}
	if want := "too many registrations from 10.0.0.1: at most 2 a second after a burst of 3; retry in 500ms"; err.Error() != "resource_exhausted: "+want {
		t.Errorf("error %q, want %q", err, want)
	}
	if err := a.allowRegister(two, now); err != nil {
		t.Errorf("another source: %v", err)
	}
	// Half a second later, one token is back.
	if err := a.allowRegister(one, now.Add(500*time.Millisecond)); err != nil {
		t.Errorf("after 500 ms: %v", err)
	}
	if err := a.allowRegister(one, now.Add(500*time.Millisecond)); err == nil {
		t.Error("a second call after 500 ms was allowed, want refused")
	}
	// Idle sources are forgotten.
	if err := a.allowRegister(two, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := len(a.sources); n != 1 {
		t.Errorf("%d sources tracked after an hour, want 1", n)
	}
}

func TestRegisterRateOff(t *testing.T) {
	a := newAdmission(Limits{}, nil)
	for range 100 {
		if err := a.allowRegister(netip.MustParseAddr("10.0.0.1"), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}
