package config

import (
	"strings"
	"testing"
)

func TestDHCPSettings(t *testing.T) {
	c, err := load(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.PXEInterface != "" || c.DHCPMode != DHCPModeProxy {
		t.Errorf("got defaults pxe_interface %q, dhcp_mode %q, want \"\" (DHCP off) and proxy", c.PXEInterface, c.DHCPMode)
	}
	c, err = load(t, []string{"--pxe-interface", "eth1"}, map[string]string{"ATTESTATION_DHCP_MODE": "full"}, "pxe_interface: eth0\ndhcp_mode: proxy\ndhcp_range: 10.0.0.100-10.0.0.199\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.PXEInterface != "eth1" || c.DHCPMode != DHCPModeFull {
		t.Errorf("got pxe_interface %q, dhcp_mode %q, want eth1 (flag) and full (env)", c.PXEInterface, c.DHCPMode)
	}
	_, err = load(t, []string{"--dhcp-mode", "relay"}, nil, "")
	if err == nil || !strings.Contains(err.Error(), `--dhcp-mode: "relay"`) {
		t.Errorf("got error %v, want one about --dhcp-mode \"relay\"", err)
	}
}

func TestDHCPFullSettings(t *testing.T) {
	c, err := load(t, []string{"--pxe-interface", "eth1", "--dhcp-mode", "full", "--dhcp-range", "10.0.0.100-10.0.0.199",
		"--dhcp-dns", "10.0.0.1, 10.0.0.2", "--dhcp-max-unknown", "50"}, nil,
		"dhcp_router: 10.0.0.1\ndhcp_reservations: {'52:54:00:00:00:01': 10.0.0.5}\n")
	if err != nil {
		t.Fatal(err)
	}
	first, last, err := c.DHCPPool()
	if err != nil || first.String() != "10.0.0.100" || last.String() != "10.0.0.199" {
		t.Errorf("got pool %s-%s, %v", first, last, err)
	}
	if c.DHCPRouter != "10.0.0.1" || len(c.DHCPDNS) != 2 || c.DHCPMaxUnknown != 50 || c.DHCPReservations["52:54:00:00:00:01"] != "10.0.0.5" {
		t.Errorf("got %+v", c)
	}
	for name, tc := range map[string]struct {
		args []string
		file string
		want string
	}{
		"full without range": {args: []string{"--pxe-interface", "eth1", "--dhcp-mode", "full"}, want: "dhcp_range: required by dhcp_mode full"},
		"bad range":          {args: []string{"--dhcp-range", "10.0.0.1"}, want: "--dhcp-range"},
		"bad dns":            {args: []string{"--dhcp-dns", "ns1"}, want: "--dhcp-dns"},
		"bad reservation":    {file: "dhcp_reservations: {nomac: 10.0.0.5}\n", want: "attestationd.yaml:1: dhcp_reservations.nomac: "},
	} {
		if _, err := load(t, tc.args, nil, tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one about %s", name, err, tc.want)
		}
	}
}
