package boot_test

import (
	"net"
	"testing"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/controlplane/lifecycle"
)

func TestDecide(t *testing.T) {
	images := func(id string, arch boot.Arch) (boot.Image, bool) {
		if id != "with-image" {
			return boot.Image{}, false
		}
		return boot.Image{Kernel: "http://cp/images/" + id + "/vmlinuz", Initrd: "http://cp/images/" + id + "/initrd.img", Cmdline: "root=/dev/sda1"}, true
	}
	p := boot.Policy{PublicURL: "http://cp:9000", KernelArgs: []string{"console=ttyS0"}, Image: images}
	efi := boot.Client{Arch: boot.ArchX8664EFI, IPXE: true}
	agent := boot.Decision{Action: boot.BootAgent,
		Kernel: "http://cp:9000/boot/assets/vmlinuz?arch=x86_64-efi", Initrd: "http://cp:9000/boot/assets/initrd.img?arch=x86_64-efi",
		Cmdline: "attestation.url=http://cp:9000 console=ttyS0"}
	withMachine := func(d boot.Decision, st lifecycle.State) boot.Decision {
		d.MachineID, d.State = "m1", st
		return d
	}
	for _, c := range []struct {
		name   string
		policy boot.Policy
		m      *boot.Machine
		client boot.Client
		want   boot.Decision
	}{
		{name: "unknown", policy: p, client: efi, want: agent},
		{name: "registered", policy: p, client: efi, m: &boot.Machine{ID: "m1", State: lifecycle.Registered},
			want: withMachine(agent, lifecycle.Registered)},
		{name: "attested", policy: p, client: efi, m: &boot.Machine{ID: "m1", State: lifecycle.Attested, SchematicID: "with-image"},
			want: withMachine(agent, lifecycle.Attested)},
		{name: "unknown arm64", policy: p, client: boot.Client{Arch: boot.ArchARM64EFI},
			want: boot.Decision{Action: boot.BootAgent, Kernel: "http://cp:9000/boot/assets/arm64/vmlinuz?arch=arm64-efi",
				Initrd: "http://cp:9000/boot/assets/arm64/initrd.img?arch=arm64-efi", Cmdline: "attestation.url=http://cp:9000 console=ttyS0"}},
		{name: "unknown, no extra args", policy: boot.Policy{PublicURL: "http://cp:9000"}, client: boot.Client{Arch: boot.ArchBIOS, MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}},
			want: boot.Decision{Action: boot.BootAgent, Kernel: "http://cp:9000/boot/assets/vmlinuz?mac=52:54:00:00:00:01&arch=x86_64-pcbios",
				Initrd: "http://cp:9000/boot/assets/initrd.img?mac=52:54:00:00:00:01&arch=x86_64-pcbios", Cmdline: "attestation.url=http://cp:9000"}},
		{name: "unknown, nothing said", policy: boot.Policy{PublicURL: "http://cp:9000"},
			want: boot.Decision{Action: boot.BootAgent, Kernel: "http://cp:9000/boot/assets/vmlinuz",
				Initrd: "http://cp:9000/boot/assets/initrd.img", Cmdline: "attestation.url=http://cp:9000"}},
		{name: "provisioned with image", policy: p, client: efi, m: &boot.Machine{ID: "m1", State: lifecycle.Provisioned, SchematicID: "with-image"},
			want: boot.Decision{Action: boot.BootImage, MachineID: "m1", State: lifecycle.Provisioned,
				Kernel: "http://cp/images/with-image/vmlinuz", Initrd: "http://cp/images/with-image/initrd.img", Cmdline: "root=/dev/sda1"}},
		{name: "provisioned, schematic without image", policy: p, client: efi, m: &boot.Machine{ID: "m1", State: lifecycle.Provisioned, SchematicID: "other"},
			want: boot.Decision{Action: boot.LocalDisk, MachineID: "m1", State: lifecycle.Provisioned}},
		{name: "provisioned, no schematic", policy: p, client: efi, m: &boot.Machine{ID: "m1", State: lifecycle.Provisioned},
			want: boot.Decision{Action: boot.LocalDisk, MachineID: "m1", State: lifecycle.Provisioned}},
		{name: "provisioned, no images configured", policy: boot.Policy{PublicURL: "http://cp:9000"}, client: efi,
			m:    &boot.Machine{ID: "m1", State: lifecycle.Provisioned, SchematicID: "with-image"},
			want: boot.Decision{Action: boot.LocalDisk, MachineID: "m1", State: lifecycle.Provisioned}},
		{name: "decommissioned", policy: p, client: efi, m: &boot.Machine{ID: "m1", State: lifecycle.Decommissioned, SchematicID: "with-image"},
			want: boot.Decision{Action: boot.Refuse, MachineID: "m1", State: lifecycle.Decommissioned}},
		{name: "state this code does not know", policy: p, client: efi, m: &boot.Machine{ID: "m1", State: "quarantined"},
			want: boot.Decision{Action: boot.Refuse, MachineID: "m1", State: "quarantined"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := c.policy.Decide(c.m, c.client)
			if got.Reason == "" {
				t.Error("got no reason")
			}
			got.Reason = ""
			if got != c.want {
				t.Errorf("got %+v\nwant %+v", got, c.want)
			}
			if got.Answers() != (c.want.Action != boot.Refuse) {
				t.Errorf("got Answers() %v for %v", got.Answers(), got.Action)
			}
		})
	}
}

func TestParseArch(t *testing.T) {
	for in, want := range map[string]boot.Arch{
		"": boot.ArchUnknown, "x86_64-pcbios": boot.ArchBIOS, "i386-pcbios": boot.ArchBIOS, "BIOS": boot.ArchBIOS, "0": boot.ArchBIOS,
		"x86_64-efi": boot.ArchX8664EFI, "efi": boot.ArchX8664EFI, "7": boot.ArchX8664EFI, "9": boot.ArchX8664EFI, "16": boot.ArchX8664EFI,
		"i386": boot.ArchBIOS, "x86_64": boot.ArchX8664EFI, "arm64": boot.ArchARM64EFI,
		"arm64-efi": boot.ArchARM64EFI, "11": boot.ArchARM64EFI, "19": boot.ArchARM64EFI,
		// ${buildarch}-${platform} from an iPXE without ${platform}.
		"x86_64-": boot.ArchX8664EFI, "i386-": boot.ArchBIOS,
	} {
		got, err := boot.ParseArch(in)
		if err != nil || got != want {
			t.Errorf("ParseArch(%q): got %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"6", "65535", "99999", "riscv64-efi", "x86_64-efi\n", "-1", "-", "x86_64--"} {
		if got, err := boot.ParseArch(in); err == nil {
			t.Errorf("ParseArch(%q): got %q, want an error", in, got)
		}
	}
}

func TestParseUUID(t *testing.T) {
	for in, want := range map[string]string{
		"":                                     "",
		"4C4C4544-0042-3510-8052-B4C04F4E4B32": "4c4c4544-0042-3510-8052-b4c04f4e4b32",
		"00000000-0000-0000-0000-000000000000": "",
		"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF": "",
	} {
		got, err := boot.ParseUUID(in)
		if err != nil || got != want {
			t.Errorf("ParseUUID(%q): got %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"x", "4c4c4544-0042-3510-8052-b4c04f4e4b3", "4c4c4544-0042-3510-8052-b4c04f4e4b32\n"} {
		if got, err := boot.ParseUUID(in); err == nil {
			t.Errorf("ParseUUID(%q): got %q, want an error", in, got)
		}
	}
}
