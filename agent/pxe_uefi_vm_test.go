//go:build cgo && linux

package agent_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/internal/testenv"
)

// TestUEFINetworkBootInVM network-boots a UEFI QEMU machine (q35, OVMF,
// virtio-net without an option ROM, so the PXE client is OVMF's own
// network stack and not iPXE; swtpm on tpm-crb) in the same lab as
// TestNetworkBootInVM: the firmware's DHCP (option 93 arch 7), the TFTP
// transfer of snponly.efi, iPXE's own DHCP, the iPXE script for
// x86_64-efi, the kernel (with initrd= on its command line) and the
// agent's initramfs over HTTP, then the agent as in the BIOS test. It
// needs what that test needs, with ovmf and ipxe's snponly.efi instead of
// ipxe-qemu, and the kernel's virtio-net modules.
func TestUEFINetworkBootInVM(t *testing.T) {
	const (
		code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
		vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
		efi  = "/usr/lib/ipxe/snponly.efi"
	)
	virtioNet := []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
		"failover", "net_failover", "virtio_net"}
	testenv.Integration(t, "UEFI VM network boot (OVMF PXE, TFTP snponly.efi, virtio-net, swtpm)")
	lab := newPXELab(t, "attuefi", virtioNet, "virtio_net", map[string]string{code: "ovmf", vars: "ovmf", efi: "ipxe"})
	want, err := os.ReadFile(efi)
	if err != nil {
		t.Fatal(err)
	}
	// The firmware writes its boot options into its variables.
	varsCopy := filepath.Join(lab.dir, "OVMF_VARS.fd")
	if b, err := os.ReadFile(vars); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(varsCopy, b, 0o644); err != nil {
		t.Fatal(err)
	}

	// The machine: OVMF, the NIC first in the boot order (its IPv4 PXE
	// entry comes before IPv6 and HTTP boot), no option ROM on it.
	const (
		mac  = "52:54:00:78:00:02"
		uuid = "9b3e1f2a-4c5d-4e6f-8a7b-1c2d3e4f5a6b"
	)
	console := lab.bootVM("-machine", "q35", "-uuid", uuid,
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy,
		"-device", "virtio-net-pci,netdev=n0,mac="+mac+",romfile=,bootindex=0",
		"-device", "tpm-crb,tpmdev=tpm0")

	// The firmware's PXE client asks first, as UEFI x86-64 and not as
	// iPXE, and is offered snponly.efi by TFTP.
	first := lab.daemon.wait(t, `component=dhcp mac=`+mac, 4*time.Minute)
	if !strings.Contains(first, `msg="dhcp offer"`) || !strings.Contains(first, " arch=x86-64-efi ipxe=false ip="+pxePool) ||
		!strings.Contains(first, " uuid="+uuid+" file=snponly.efi ") {
		t.Fatalf("first DHCP reply to %s: %s; want an offer to the UEFI PXE client (arch x86-64-efi, not iPXE) of snponly.efi", mac, first)
	}
	lab.daemon.wait(t, `msg="dhcp ack" component=dhcp mac=`+mac+` arch=x86-64-efi ipxe=false`, time.Minute)
	console.wait(t, ">>Start PXE over IPv4", time.Minute)
	// OVMF asks for the size first, ending that transfer after the option
	// acknowledgment, then fetches the file.
	lab.daemon.wait(t, `msg="tftp size query" component=tftp client=`+pxePool, time.Minute)
	tftp := lab.daemon.wait(t, `msg="tftp transfer" component=tftp client=`+pxePool, 2*time.Minute)
	if !strings.Contains(tftp, " file=snponly.efi bytes="+strconv.Itoa(len(want))+" ") {
		t.Fatalf("TFTP of snponly.efi: %s; want a complete transfer of its %d bytes", tftp, len(want))
	}
	// OVMF asks for windowsize (RFC 7440): more than one block per ACK.
	opts := regexp.MustCompile(` duration=(\S+) blksize=(\d+) windowsize=(\d+)`).FindStringSubmatch(tftp)
	if opts == nil || opts[3] == "1" {
		t.Fatalf("TFTP of snponly.efi: %s; want a windowsize above 1 negotiated", tftp)
	}
	t.Logf("TFTP of snponly.efi in %s with blksize %s and windowsize %s", opts[1], opts[2], opts[3])

	// iPXE, chainloaded: its own DHCP, then the script and the assets.
	for _, step := range []string{
		`msg="dhcp offer" component=dhcp mac=` + mac + ` arch=x86-64-efi ipxe=true ip=` + pxePool,
		`msg="boot script" component=boot mac=` + mac + ` uuid=` + uuid + ` arch=x86_64-efi action=agent`,
		`msg="boot asset" component=boot asset=vmlinuz mac=` + mac + ` arch=x86_64-efi`,
		`msg="boot asset" component=boot asset=initrd.img mac=` + mac + ` arch=x86_64-efi`,
	} {
		lab.daemon.wait(t, step, 3*time.Minute)
	}

	// The kernel found its initramfs (initrd= on the EFI stub's command
	// line): the agent runs.
	id := lab.enroll(console, "pxe-uefi-1", "")
	logPhases(t, "UEFI network boot", lab.vmStart, append(append([]bootPhase{
		{"OVMF's first DHCP offer", seen(lab.daemon, `msg="dhcp offer" component=dhcp mac=`+mac)},
		{"firmware DHCP (OVMF)", seen(lab.daemon, `msg="dhcp ack" component=dhcp mac=`+mac+` arch=x86-64-efi ipxe=false`)},
		{"TFTP snponly.efi", seen(lab.daemon, `msg="tftp transfer" component=tftp client=`+pxePool)},
		{"iPXE opens the NIC", seen(console, "net0: "+mac+" using")},
		{"iPXE DHCP", seen(lab.daemon, `msg="dhcp ack" component=dhcp mac=`+mac+` arch=x86-64-efi ipxe=true`)},
		{"iPXE network configured", seen(console, "Configuring (net0 "+mac+")")},
	}, lab.agentPhases(console, mac, seen(lab.daemon, `msg="boot asset" component=boot asset=initrd.img mac=`+mac),
		nth(lab.eventTimes(t, id, "node.online"), 0))...),
		bootPhase{"approved (REST API)", lab.approved},
		bootPhase{"node.configured", nth(lab.eventTimes(t, id, "node.configured"), 0)}))
}
