package hardware

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestCollect(t *testing.T) {
	addrs := map[string][]netip.Addr{
		"eno1": {
			netip.MustParseAddr("10.0.0.17"),
			netip.MustParseAddr("fe80::b226:28ff:feaa:1"), // link-local: dropped
			netip.MustParseAddr("2001:db8::17"),
		},
		"enp2s0": {netip.MustParseAddr("::ffff:192.168.1.5")}, // v4-mapped: unmapped
		"br0":    {netip.MustParseAddr("172.16.0.1")},         // virtual: never asked
	}
	lookup := func(name string) ([]netip.Addr, error) { return addrs[name], nil }

	tests := []struct {
		name string
		root string
		want Info
	}{
		{
			name: "server with SMBIOS and virtual interfaces",
			root: "testdata/server",
			want: Info{
				SMBIOSUUID: "4c4c4544-0047-3010-8052-b4c04f4e4b32",
				Serial:     "B4NNK2",
				Product:    "PowerEdge R640",
				Interfaces: []Interface{
					{Name: "eno1", MAC: "b0:26:28:aa:00:01", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.17"), netip.MustParseAddr("2001:db8::17")}},
					{Name: "eno2"}, // no usable MAC, still a physical port
					{Name: "enp2s0", MAC: "52:54:00:12:34:56", IPs: []netip.Addr{netip.MustParseAddr("192.168.1.5")}},
				},
			},
		},
		{
			name: "VM without SMBIOS",
			root: "testdata/vm",
			want: Info{Interfaces: []Interface{{Name: "ens3", MAC: "52:54:00:ab:cd:ef"}}},
		},
		{
			name: "no sysfs at all",
			root: "testdata/missing",
			want: Info{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Collector{Root: tt.root, Addrs: lookup}.Collect()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Collect() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestInfoLists(t *testing.T) {
	info := Collector{Root: "testdata/server", Addrs: func(name string) ([]netip.Addr, error) {
		switch name {
		case "eno1":
			return []netip.Addr{netip.MustParseAddr("2001:db8::1")}, nil
		case "enp2s0":
			return []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::2")}, nil
		}
		return nil, nil
	}}.Collect()
	if got, want := info.MACs(), []string{"b0:26:28:aa:00:01", "52:54:00:12:34:56"}; !reflect.DeepEqual(got, want) {
		t.Errorf("MACs() = %v, want %v", got, want)
	}
	if got, want := info.IPs(), []string{"10.1.2.3", "2001:db8::1", "2001:db8::2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("IPs() = %v, want %v", got, want)
	}
}

func TestPhysical(t *testing.T) {
	got := Collector{Root: "testdata/server"}.Physical()
	if want := []string{"eno1", "eno2", "enp2s0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Physical() = %v, want %v", got, want)
	}
}
