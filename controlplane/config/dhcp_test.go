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
	c, err = load(t, []string{"--pxe-interface", "eth1"}, map[string]string{"ATTESTATION_DHCP_MODE": "full"}, "pxe_interface: eth0\ndhcp_mode: proxy\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.PXEInterface != "eth1" || c.DHCPMode != DHCPModeFull {
		t.Errorf("got pxe_interface %q, dhcp_mode %q, want eth1 (flag) and full (env)", c.PXEInterface, c.DHCPMode)
	}
	_, err = load(t, []string{"--dhcp-mode", "relay"}, nil, "")
	if err == nil || !strings.Contains(err.Error(), `dhcp_mode "relay"`) {
		t.Errorf("got error %v, want one about dhcp_mode \"relay\"", err)
	}
}
