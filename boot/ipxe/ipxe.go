// Package ipxe renders the per-machine iPXE scripts of the boot decision:
// boot a kernel and initramfs, leave for the local disk, or show why a
// machine is not booted and reboot.
package ipxe

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/attestation/attestation/boot"
)

// InitrdName is the name the initramfs is loaded under. UEFI iPXE hands
// the kernel only the initrds named on its command line (initrd=NAME);
// BIOS iPXE ignores the argument.
const InitrdName = "initrd.img"

// RetrySeconds is how long a refused or failed machine waits before it
// reboots and asks again.
const RetrySeconds = 30

// UnavailableSeconds is how long a machine shows why what it was to boot
// is unavailable before its firmware moves on.
const UnavailableSeconds = 10

// Script renders the script for decision d of client c. A Refuse decision
// renders the refusal script (Error with d's reason).
func Script(d boot.Decision, c boot.Client) []byte {
	b := header(d, c)
	switch d.Action {
	case boot.BootAgent, boot.BootImage:
		// The boot loader's arguments follow the kernel's URL; initrd=
		// first so a long command line cannot push it out.
		args := "initrd=" + InitrdName
		if cmd := line(d.Cmdline); cmd != "" {
			args += " " + cmd
		}
		fmt.Fprintf(b, "kernel %s %s || goto failed\n", line(d.Kernel), args)
		fmt.Fprintf(b, "initrd --name %s %s || goto failed\n", InitrdName, line(d.Initrd))
		b.WriteString("boot || goto failed\n")
		b.WriteString(":failed\n")
		fmt.Fprintf(b, "echo Boot failed, rebooting in %d seconds\n", RetrySeconds)
		fmt.Fprintf(b, "sleep %d\n", RetrySeconds)
		b.WriteString("reboot\n")
	case boot.LocalDisk:
		// exit 1, not exit: UEFI then tries its next boot option (the
		// disk) instead of stopping in its boot manager, and BIOS moves
		// on to the next boot device.
		b.WriteString("echo Booting from the local disk\n")
		b.WriteString("exit 1\n")
	default:
		b.Reset()
		b.Write(Error(d.Reason))
	}
	return b.Bytes()
}

// Unavailable renders the script for decision d of client c when what it
// boots is not there to fetch: it shows each line of why and what to do,
// waits, and exits with an error, so the firmware moves on to its next
// boot option (the machine asks again on its next network boot).
func Unavailable(d boot.Decision, c boot.Client, lines ...string) []byte {
	b := header(d, c)
	for _, l := range lines {
		fmt.Fprintf(b, "echo attestation boot: %s\n", echo(l))
	}
	fmt.Fprintf(b, "echo Leaving network boot in %d seconds\n", UnavailableSeconds)
	fmt.Fprintf(b, "sleep %d\n", UnavailableSeconds)
	b.WriteString("exit 1\n")
	return b.Bytes()
}

// header starts a script with comments saying whom it is for and why.
func header(d boot.Decision, c boot.Client) *bytes.Buffer {
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# attestation boot: %s\n", comment(d.Reason))
	fmt.Fprintf(&b, "# mac %s uuid %s arch %s", orNone(c.MAC.String()), orNone(c.UUID), orNone(string(c.Arch)))
	if d.MachineID != "" {
		fmt.Fprintf(&b, " machine %s state %s", comment(d.MachineID), comment(string(d.State)))
	}
	b.WriteString("\n")
	return &b
}

// Error renders a script that shows msg, waits and reboots.
func Error(msg string) []byte {
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "echo attestation boot: %s\n", echo(msg))
	fmt.Fprintf(&b, "echo Rebooting in %d seconds\n", RetrySeconds)
	fmt.Fprintf(&b, "sleep %d\n", RetrySeconds)
	b.WriteString("reboot\n")
	return b.Bytes()
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return comment(s)
}

// line keeps s on one script line.
func line(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func comment(s string) string { return line(s) }

// echo keeps s on one line, one command (iPXE splits commands at ";",
// "&&" and "||") and free of settings for iPXE to expand (${...}).
func echo(s string) string {
	return strings.NewReplacer(";", ",", "&&", "and", "||", "or", "${", "$ {").Replace(line(s))
}
