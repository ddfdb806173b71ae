package netconf

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ack(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 2))),
	}
	m, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFromACK(t *testing.T) {
	defRoute := func(via string) Route {
		return Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr(via)}
	}
	tests := []struct {
		name string
		mods []dhcpv4.Modifier
		want Config
	}{
		{
			name: "QEMU user network",
			mods: []dhcpv4.Modifier{
				dhcpv4.WithNetmask(net.IPv4Mask(255, 255, 255, 0)),
				dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
				dhcpv4.WithDNS(net.IPv4(10, 0, 2, 3)),
				dhcpv4.WithLeaseTime(86400),
				dhcpv4.WithOption(dhcpv4.OptDomainName("example.internal.")),
			},
			want: Config{
				Interface: "eth0",
				Address:   netip.MustParsePrefix("10.0.2.15/24"),
				Routes:    []Route{defRoute("10.0.2.2")},
				DNS:       []netip.Addr{netip.MustParseAddr("10.0.2.3")},
				Search:    []string{"example.internal"},
				Server:    netip.MustParseAddr("10.0.2.2"),
				Lease:     24 * time.Hour,
				Renew:     12 * time.Hour,
			},
		},
		{
			name: "classless routes win over the router option",
			mods: []dhcpv4.Modifier{
				dhcpv4.WithNetmask(net.IPv4Mask(255, 255, 255, 255)),
				dhcpv4.WithRouter(net.IPv4(10, 0, 2, 99)),
				dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
					&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4(10, 0, 2, 1).To4(), Mask: net.CIDRMask(32, 32)}, Router: net.IPv4(0, 0, 0, 0).To4()},
					&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4(0, 0, 0, 0).To4(), Mask: net.CIDRMask(0, 32)}, Router: net.IPv4(10, 0, 2, 1).To4()},
				)),
				dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x05, 0xdc})),
				dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(10 * time.Minute)),
				dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(4 * time.Minute)),
			},
			want: Config{
				Interface: "eth0",
				Address:   netip.MustParsePrefix("10.0.2.15/32"),
				Routes: []Route{
					{Dst: netip.MustParsePrefix("10.0.2.1/32"), Via: netip.MustParseAddr("0.0.0.0")},
					defRoute("10.0.2.1"),
				},
				MTU:    1500,
				Server: netip.MustParseAddr("10.0.2.2"),
				Lease:  10 * time.Minute,
				Renew:  4 * time.Minute,
			},
		},
		{
			name: "no mask: classful; silly MTU ignored",
			mods: []dhcpv4.Modifier{
				dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x00, 0x10})),
			},
			want: Config{
				Interface: "eth0",
				Address:   netip.MustParsePrefix("10.0.2.15/8"),
				Server:    netip.MustParseAddr("10.0.2.2"),
				Lease:     time.Hour,
				Renew:     30 * time.Minute,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromACK("eth0", ack(t, tt.mods...))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("FromACK() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestFromACKRefuses(t *testing.T) {
	nak := ack(t, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak))
	noIP := ack(t, dhcpv4.WithYourIP(net.IPv4zero))
	badMask := ack(t, dhcpv4.WithNetmask(net.IPMask{255, 0, 255, 0}))
	for name, m := range map[string]*dhcpv4.DHCPv4{"NAK": nak, "no address": noIP, "bad mask": badMask, "nil": nil} {
		if got, err := FromACK("eth0", m); err == nil {
			t.Errorf("FromACK(%s) = %+v, want an error", name, got)
		}
	}
}

func TestResolvConf(t *testing.T) {
	c := Config{
		Interface: "eth0",
		DNS:       []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("10.0.1.53")},
		Search:    []string{"lab.example", "example"},
	}
	want := "# from DHCP on eth0\nnameserver 10.0.0.53\nnameserver 10.0.1.53\nsearch lab.example example\n"
	if got := string(ResolvConf(c)); got != want {
		t.Errorf("ResolvConf() = %q, want %q", got, want)
	}
	if got := ResolvConf(Config{Interface: "eth0"}); got != nil {
		t.Errorf("ResolvConf(no DNS) = %q, want nil", got)
	}
}

func TestWaitCarrier(t *testing.T) {
	start := time.Now()
	got := WaitCarrier(context.Background(), "testdata", []string{"eth0", "eth1", "eth2"}, 5*time.Second)
	if want := []string{"eth1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("WaitCarrier() = %v, want %v", got, want)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("WaitCarrier took %s with a link already up", d)
	}
	got = WaitCarrier(context.Background(), "testdata", []string{"eth0", "eth2"}, 300*time.Millisecond)
	if len(got) != 0 {
		t.Errorf("WaitCarrier(no carrier) = %v, want none", got)
	}
}

func TestSelect(t *testing.T) {
	macs := map[string]string{"eno1": "b0:26:28:aa:00:01", "eno2": "b0:26:28:aa:00:02"}
	macOf := func(n string) string { return macs[n] }
	names := []string{"eno1", "eno2"}
	tests := []struct {
		want string
		got  []string
	}{
		{"", []string{"eno1", "eno2"}},
		{"eno2", []string{"eno2"}},
		{"B0:26:28:AA:00:01", []string{"eno1"}},
		{"eth9", []string{}},
	}
	for _, tt := range tests {
		if got := Select(names, tt.want, macOf); !reflect.DeepEqual(got, tt.got) {
			t.Errorf("Select(%q) = %v, want %v", tt.want, got, tt.got)
		}
	}
}
