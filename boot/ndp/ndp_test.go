package ndp

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

var (
	clientMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x78, 0x00, 0x01}
	serverMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	clientLL  = net.ParseIP("fe80::5054:ff:fe78:1")
)

// ipxeSolicitation is a router solicitation as iPXE sends it: no
// reserved bits, its MAC in a source link-layer address option.
func ipxeSolicitation() []byte {
	return append([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1}, clientMAC...)
}

func TestParseSolicitation(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		wantMAC net.HardwareAddr
		wantErr bool
	}{
		{"iPXE's", ipxeSolicitation(), clientMAC, false},
		{"no options", []byte{133, 0, 0, 0, 0, 0, 0, 0}, nil, false},
		{"another option first", append([]byte{133, 0, 0, 0, 0, 0, 0, 0, 14, 1, 0, 0, 0, 0, 0, 0, 1, 1}, clientMAC...), clientMAC, false},
		{"a link-layer address not Ethernet's", append([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 2}, make([]byte, 14)...), nil, false},
		{"short", []byte{133, 0, 0, 0}, nil, true},
		{"not a solicitation", append([]byte{134, 0, 0, 0, 0, 0, 0, 0, 1, 1}, clientMAC...), nil, true},
		{"code 1", append([]byte{133, 1, 0, 0, 0, 0, 0, 0, 1, 1}, clientMAC...), nil, true},
		{"option of length 0", []byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, nil, true},
		{"option past the end", []byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0}, nil, true},
		{"half an option", []byte{133, 0, 0, 0, 0, 0, 0, 0, 1}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseSolicitation(tt.b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseSolicitation: err %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errMalformed) {
				t.Errorf("err %v, want errMalformed", err)
			}
			if !bytes.Equal(s.mac, tt.wantMAC) {
				t.Errorf("mac %v, want %v", s.mac, tt.wantMAC)
			}
		})
	}
}

// TestAdvertisement: the answer configures nothing (RFC 4861 4.2): no hop
// limit, no M or O flag, router lifetime, reachable time and retransmit
// timer 0, and only the server's link-layer address as an option.
func TestAdvertisement(t *testing.T) {
	got := advertisement(serverMAC)
	want := append([]byte{134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, serverMAC...)
	if !bytes.Equal(got, want) {
		t.Errorf("advertisement:\n got % x\nwant % x", got, want)
	}
	if got := advertisement(nil); len(got) != 16 {
		t.Errorf("advertisement without a MAC: %d bytes, want 16 (no option)", len(got))
	}
	s, err := parseSolicitation(routerSolicitation(serverMAC))
	if err != nil || !bytes.Equal(s.mac, serverMAC) {
		t.Errorf("the responder's own solicitation parses as mac %v, err %v; want %v", s.mac, err, serverMAC)
	}
}

// TestDecide: only a machine DHCP just answered as iPXE, soliciting from
// a link-local address with its MAC, is answered; none while another
// router advertises.
func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := New(Options{Interface: "br0", Window: time.Minute, Quiet: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return now }
	ipxe := solicitation{mac: clientMAC}
	if got := r.decide(ipxe, clientLL); got != resultNotExpected {
		t.Errorf("before Expect: %s, want %s", got, resultNotExpected)
	}
	r.Expect(clientMAC)
	for _, tt := range []struct {
		name string
		s    solicitation
		src  net.IP
		want string
	}{
		{"expected", ipxe, clientLL, resultAnswered},
		{"from the unspecified address", ipxe, net.IPv6unspecified, resultNoSource},
		{"from a global address", ipxe, net.ParseIP("2001:db8::1"), resultNotLinkLocal},
		{"without a link-layer address", solicitation{}, clientLL, resultNoLinkLayer},
		{"another machine", solicitation{mac: serverMAC}, clientLL, resultNotExpected},
	} {
		if got := r.decide(tt.s, tt.src); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}

	now = now.Add(61 * time.Second)
	if got := r.decide(ipxe, clientLL); got != resultNotExpected {
		t.Errorf("after the window: %s, want %s", got, resultNotExpected)
	}
	r.Expect(clientMAC)
	if !r.heardRouter(net.ParseIP("fe80::1")) {
		t.Error("the first router heard is not news")
	}
	if r.heardRouter(net.ParseIP("fe80::1")) {
		t.Error("the same router again is news")
	}
	if got := r.decide(ipxe, clientLL); got != resultRouter {
		t.Errorf("with a router on the link: %s, want %s", got, resultRouter)
	}
	now = now.Add(time.Hour)
	r.Expect(clientMAC)
	if got := r.decide(ipxe, clientLL); got != resultAnswered {
		t.Errorf("an hour after the router's last advertisement: %s, want %s", got, resultAnswered)
	}
}

// TestExpectPrunes: expectations older than the window are dropped, so a
// boot storm's MACs do not pile up.
func TestExpectPrunes(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := New(Options{Interface: "br0", Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return now }
	for i := range 1000 {
		r.Expect(net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)})
	}
	now = now.Add(2 * time.Minute)
	r.Expect(clientMAC)
	if n := len(r.expected); n != 1 {
		t.Errorf("%d expectations kept, want 1", n)
	}
}

func TestNewNeedsInterface(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without an interface: no error")
	}
}

func FuzzParseSolicitation(f *testing.F) {
	f.Add(ipxeSolicitation())
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSolicitation(b)
		if err == nil && s.mac != nil && len(s.mac) != 6 {
			t.Errorf("mac of %d bytes", len(s.mac))
		}
	})
}
