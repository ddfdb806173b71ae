package ipxe_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/ipxe"
	"github.com/attestation/attestation/controlplane/lifecycle"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestScripts(t *testing.T) {
	policy := boot.Policy{
		PublicURL:  "http://192.0.2.1:9000",
		KernelArgs: []string{"console=ttyS0", "quiet"},
		Image: func(id string, arch boot.Arch) (boot.Image, bool) {
			return boot.Image{
				Kernel:  "http://192.0.2.1:9000/images/" + id + "/vmlinuz",
				Initrd:  "http://192.0.2.1:9000/images/" + id + "/initramfs.img",
				Cmdline: "root=LABEL=root ro",
			}, id == "5ca1ab1e"
		},
	}
	mac, _ := boot.ParseMAC("52:54:00:12:34:56")
	client := func(arch boot.Arch) boot.Client {
		return boot.Client{MAC: mac, UUID: "4c4c4544-0042-3510-8052-b4c04f4e4b32", Arch: arch, IPXE: true}
	}
	machine := func(st lifecycle.State, schematic string) *boot.Machine {
		return &boot.Machine{ID: "0b7e5d2a-6f43-4c1e-9d0a-1f2e3d4c5b6a", State: st, SchematicID: schematic}
	}
	archs := []boot.Arch{boot.ArchBIOS, boot.ArchX8664EFI, boot.ArchARM64EFI}
	cases := []struct {
		name string
		m    *boot.Machine
	}{
		{"unknown", nil},
		{"registered", machine(lifecycle.Registered, "")},
		{"attested", machine(lifecycle.Attested, "")},
		{"provisioned-image", machine(lifecycle.Provisioned, "5ca1ab1e")},
		{"provisioned-disk", machine(lifecycle.Provisioned, "")},
		{"decommissioned", machine(lifecycle.Decommissioned, "")},
	}
	for _, c := range cases {
		for _, arch := range archs {
			name := c.name + "-" + string(arch)
			t.Run(name, func(t *testing.T) {
				cl := client(arch)
				golden(t, name, ipxe.Script(policy.Decide(c.m, cl), cl))
			})
		}
	}
	t.Run("unknown-noarch", func(t *testing.T) {
		cl := boot.Client{MAC: mac}
		golden(t, "unknown-noarch", ipxe.Script(policy.Decide(nil, cl), cl))
	})
	t.Run("unavailable", func(t *testing.T) {
		cl := client(boot.ArchX8664EFI)
		golden(t, "unavailable", ipxe.Unavailable(policy.Decide(nil, cl), cl,
			"the server has no vmlinuz, initrd.img in its boot assets directory /var/lib/attestation/boot",
			"build them there; make boot-assets && done"))
	})
	t.Run("error", func(t *testing.T) {
		golden(t, "error", ipxe.Error("the machine database cannot be read; ${evil} && reboot"))
	})
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".ipxe")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got script:\n%s\nwant (%s):\n%s", got, path, want)
	}
}

// TestUEFIInitrdName checks what UEFI needs in every booting script: the
// kernel line names the initrd, and the initrd is loaded under that name.
func TestUEFIInitrdName(t *testing.T) {
	cl := boot.Client{Arch: boot.ArchX8664EFI}
	s := string(ipxe.Script(boot.Policy{PublicURL: "http://h"}.Decide(nil, cl), cl))
	for _, want := range []string{"initrd=" + ipxe.InitrdName + " ", "initrd --name " + ipxe.InitrdName + " "} {
		if !bytes.Contains([]byte(s), []byte(want)) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}
