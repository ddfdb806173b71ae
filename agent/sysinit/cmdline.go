package sysinit

import (
	"fmt"
	"os"
	"strings"
)

// CmdlinePath is where the kernel exposes its command line.
const CmdlinePath = "/proc/cmdline"

// Settings are the agent's parameters on the kernel command line, all
// prefixed "attestation.":
//
//	attestation.url=URL          control plane (required)
//	attestation.ca=PATH          PEM CA bundle inside the initramfs
//	attestation.tpm=SPEC         TPM to use (default /dev/tpmrm0)
//	attestation.modules=a,b,c    kernel modules to load, in order
//	attestation.pcrs=0-7         PCRs to quote when the control plane names none
//	attestation.iface=NAME|MAC   the only interface to configure by DHCP
type Settings struct {
	URL     string
	CA      string
	TPM     string
	Modules []Module
	PCRs    string
	Iface   string
	// RequireTPM (attestation.require_tpm=1): never register without a TPM.
	RequireTPM bool
	// Unknown lists attestation.* parameters this agent does not know, so
	// that a typo is logged rather than silently ignored.
	Unknown []string
}

// ReadCmdline reads and parses the running kernel's command line.
func ReadCmdline() (Settings, error) {
	b, err := os.ReadFile(CmdlinePath)
	if err != nil {
		return Settings{}, fmt.Errorf("read kernel command line: %w", err)
	}
	return Parse(string(b)), nil
}

// Parse extracts the attestation.* parameters from a kernel command line.
// A later occurrence of a parameter wins, like in the kernel.
func Parse(cmdline string) Settings {
	var s Settings
	for _, p := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(p, "=")
		name, ok := strings.CutPrefix(key, "attestation.")
		if !ok {
			continue
		}
		switch name {
		case "url":
			s.URL = value
		case "ca":
			s.CA = value
		case "tpm":
			s.TPM = value
		case "modules":
			s.Modules = ParseModuleList(value)
		case "pcrs":
			s.PCRs = value
		case "iface":
			s.Iface = value
		case "require_tpm":
			s.RequireTPM = value == "1" || value == "true" || value == "yes"
		default:
			s.Unknown = append(s.Unknown, key)
		}
	}
	return s
}

// splitCmdline splits like the kernel's next_arg: parameters are separated
// by white space, double quotes group (and are removed), and "--" ends the
// kernel's parameters (the rest belongs to init's argv).
func splitCmdline(cmdline string) []string {
	var (
		params []string
		cur    strings.Builder
		quoted bool
		inWord bool
	)
	flush := func() bool {
		if inWord {
			if !quoted && cur.String() == "--" {
				return false
			}
			params = append(params, cur.String())
		}
		cur.Reset()
		inWord = false
		return true
	}
	for _, r := range cmdline {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if !flush() {
				return params
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	flush()
	return params
}
