package boot

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/attestation/attestation/controlplane/lifecycle"
)

// Arch is a boot client's firmware architecture, in iPXE's
// ${buildarch}-${platform} spelling.
type Arch string

// The architectures a machine can network-boot the agent on.
const (
	// ArchUnknown: the client did not say; treated as x86-64.
	ArchUnknown  Arch = ""
	ArchBIOS     Arch = "x86_64-pcbios"
	ArchX8664EFI Arch = "x86_64-efi"
	ArchARM64EFI Arch = "arm64-efi"
)

// EFI reports whether a is a UEFI architecture.
func (a Arch) EFI() bool { return strings.HasSuffix(string(a), "-efi") }

// archNames maps every accepted spelling to its Arch: iPXE's
// ${buildarch}-${platform}, ${platform} and ${buildarch} (the iPXE builds
// network boot uses are i386 for BIOS, undionly.kpxe, and x86_64 or arm64
// for UEFI), short names, and the DHCP option 93 (RFC 4578, IANA
// processor architecture) numbers.
var archNames = map[string]Arch{
	"x86_64-pcbios": ArchBIOS, "i386-pcbios": ArchBIOS, "pcbios": ArchBIOS, "bios": ArchBIOS, "i386": ArchBIOS,
	"x86_64-efi": ArchX8664EFI, "efi": ArchX8664EFI, "uefi": ArchX8664EFI, "x64": ArchX8664EFI, "x86_64": ArchX8664EFI,
	"arm64-efi": ArchARM64EFI, "arm64": ArchARM64EFI, "aarch64": ArchARM64EFI,
	"0": ArchBIOS, "7": ArchX8664EFI, "9": ArchX8664EFI, "16": ArchX8664EFI,
	"11": ArchARM64EFI, "19": ArchARM64EFI,
}

// ParseArch parses an architecture as iPXE (x86_64-efi, pcbios, i386,
// x86_64), a person (bios, uefi, arm64) or DHCP option 93 (0, 7, 9, 11,
// 16, 19) names it.
// The empty string is ArchUnknown.
func ParseArch(s string) (Arch, error) {
	if s == "" {
		return ArchUnknown, nil
	}
	// An iPXE build without ${platform} sends "x86_64-" for
	// ${buildarch}-${platform}.
	if a, ok := archNames[strings.TrimSuffix(strings.ToLower(s), "-")]; ok {
		return a, nil
	}
	if _, err := strconv.ParseUint(s, 10, 16); err == nil {
		return "", fmt.Errorf("architecture %s (DHCP option 93) is not supported: want 0 (BIOS), 7, 9 or 16 (x86-64 UEFI), 11 or 19 (arm64 UEFI)", s)
	}
	return "", fmt.Errorf("unknown architecture %q: want x86_64-pcbios, x86_64-efi or arm64-efi", s)
}

// ParseMAC parses a hardware address in any form net.ParseMAC accepts;
// its String is lower-case and colon-separated, as the store keeps MACs.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("MAC address %q: want six bytes like 52:54:00:12:34:56", s)
	}
	return mac, nil
}

// ParseUUID parses an SMBIOS UUID and returns it in canonical lower-case
// form. The empty string, the nil UUID and the all-ones UUID (firmwares
// that have none report these) are "" with no error.
func ParseUUID(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", fmt.Errorf("SMBIOS UUID %q: want 8-4-4-4-12 hex digits", s)
	}
	if u == uuid.Nil || u == uuid.Max {
		return "", nil
	}
	return u.String(), nil
}

// Client is what a booting machine told us about itself; none of it is
// proof of identity.
type Client struct {
	// MAC is the booting NIC's address.
	MAC net.HardwareAddr
	// UUID is the SMBIOS UUID, canonical lower-case; "" when not sent.
	UUID string
	Arch Arch
	// IPXE: the client is iPXE already (user class "iPXE"), so it is
	// handed the script rather than an iPXE binary to chainload.
	IPXE bool
}

// Machine is what the boot decision needs of a stored machine.
type Machine struct {
	ID          string
	State       lifecycle.State
	SchematicID string
	Hostname    string
}

// Action is what a booting machine is told to do.
type Action int

// The actions.
const (
	// BootAgent: boot the kernel with the agent's initramfs, to register
	// and attest.
	BootAgent Action = iota + 1
	// BootImage: boot the machine's schematic image.
	BootImage
	// LocalDisk: leave network boot and boot from the local disk.
	LocalDisk
	// Refuse: no answer at all; DHCP and TFTP stay silent.
	Refuse
)

func (a Action) String() string {
	switch a {
	case BootAgent:
		return "agent"
	case BootImage:
		return "image"
	case LocalDisk:
		return "local_disk"
	case Refuse:
		return "refuse"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Decision is the outcome of the boot decision.
type Decision struct {
	Action Action
	// Reason says why, for logs and the script's comments.
	Reason string
	// MachineID and State are the stored machine's; empty when unknown.
	MachineID string
	State     lifecycle.State
	// Kernel and Initrd are URLs, and Cmdline the kernel command line, for
	// BootAgent and BootImage.
	Kernel, Initrd, Cmdline string
}

// Answers reports whether DHCP and TFTP should answer the client at all.
func (d Decision) Answers() bool { return d.Action != Refuse }

// Image is how a schematic's image boots.
type Image struct {
	Kernel, Initrd, Cmdline string
}

// Policy holds the settings the boot decision depends on.
type Policy struct {
	// PublicURL is the daemon's URL as booting machines reach it, without
	// a trailing slash: the agent's attestation.url and the base of the
	// boot asset URLs.
	PublicURL string
	// KernelArgs are added to the agent's kernel command line.
	KernelArgs []string
	// Image returns how a schematic's image boots on arch; nil, or false,
	// means there is none and the machine boots from its disk.
	Image func(schematicID string, arch Arch) (Image, bool)
}

// AssetsPath is the URL path the boot assets are served under.
const AssetsPath = "/boot/assets/"

// AgentKernel and AgentInitrd name the agent's boot assets for arch,
// relative to the boot assets directory.
func AgentKernel(arch Arch) string { return archDir(arch) + "vmlinuz" }

// AgentInitrd: see AgentKernel.
func AgentInitrd(arch Arch) string { return archDir(arch) + "initrd.img" }

func archDir(arch Arch) string {
	if arch == ArchARM64EFI {
		return "arm64/"
	}
	return ""
}

// Decide is the boot decision, the same for DHCP, TFTP and HTTP: m is the
// stored machine the client's MAC or UUID matched (nil: none).
//
//   - unknown, registered or attested: boot the agent, which registers
//     and attests the machine;
//   - provisioned: boot its schematic's image when there is one, else the
//     local disk;
//   - decommissioned (or any state this code does not know): nothing.
func (p Policy) Decide(m *Machine, c Client) Decision {
	if m == nil {
		return p.agent(Decision{Reason: "unknown machine"}, c)
	}
	d := Decision{MachineID: m.ID, State: m.State}
	switch m.State {
	case lifecycle.Registered, lifecycle.Attested:
		d.Reason = "machine is " + string(m.State) + ", not yet provisioned"
		return p.agent(d, c)
	case lifecycle.Provisioned:
		if m.SchematicID != "" && p.Image != nil {
			if img, ok := p.Image(m.SchematicID, c.Arch); ok {
				d.Action, d.Reason = BootImage, "machine is provisioned with schematic "+m.SchematicID
				d.Kernel, d.Initrd, d.Cmdline = img.Kernel, img.Initrd, img.Cmdline
				return d
			}
		}
		d.Action, d.Reason = LocalDisk, "machine is provisioned and has no network image: boot from disk"
		return d
	case lifecycle.Decommissioned:
		d.Action, d.Reason = Refuse, "machine is decommissioned: an operator must reinstate it before it boots"
		return d
	}
	d.Action, d.Reason = Refuse, fmt.Sprintf("machine is in unknown state %q", m.State)
	return d
}

func (p Policy) agent(d Decision, c Client) Decision {
	d.Action = BootAgent
	// The query says who fetches, for the transfer logs and metrics.
	var q []string
	if len(c.MAC) > 0 {
		q = append(q, "mac="+c.MAC.String())
	}
	if c.Arch != ArchUnknown {
		q = append(q, "arch="+string(c.Arch))
	}
	query := ""
	if len(q) > 0 {
		query = "?" + strings.Join(q, "&")
	}
	d.Kernel = p.PublicURL + AssetsPath + AgentKernel(c.Arch) + query
	d.Initrd = p.PublicURL + AssetsPath + AgentInitrd(c.Arch) + query
	d.Cmdline = strings.Join(append([]string{"attestation.url=" + p.PublicURL}, p.KernelArgs...), " ")
	return d
}
