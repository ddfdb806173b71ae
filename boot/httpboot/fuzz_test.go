package httpboot_test

import (
	"bytes"
	"net/url"
	"testing"

	"github.com/attestation/attestation/boot"
	"github.com/attestation/attestation/boot/httpboot"
	"github.com/attestation/attestation/boot/ipxe"
)

// FuzzParseQuery feeds the script request's query parsing arbitrary
// bytes: it must never panic, and what it accepts must be canonical (a
// six-byte or longer MAC, a known arch, a lower-case UUID), parse again to
// the same client, and render a script whose lines it cannot break.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"mac=52:54:00:12:34:56&uuid=4c4c4544-0042-3510-8052-b4c04f4e4b32&arch=x86_64-efi",
		"mac=52-54-00-12-34-56&arch=i386",
		"mac=5254.0012.3456&arch=7",
		"mac=52:54:00:12:34:56&uuid=&arch=",
		"mac=52:54:00:12:34:56&uuid={4c4c4544-0042-3510-8052-b4c04f4e4b32}",
		"mac=%zz", "arch=arm64", "mac=52:54:00:12:34:56&mac=00:00:00:00:00:00", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		c, err := httpboot.ParseQuery(q)
		if err != nil {
			return
		}
		if len(c.MAC) < 6 {
			t.Fatalf("%q: accepted MAC %v", q, c.MAC)
		}
		switch c.Arch {
		case boot.ArchUnknown, boot.ArchBIOS, boot.ArchX8664EFI, boot.ArchARM64EFI:
		default:
			t.Fatalf("%q: accepted arch %q", q, c.Arch)
		}
		again := url.Values{"mac": {c.MAC.String()}, "uuid": {c.UUID}, "arch": {string(c.Arch)}}
		c2, err := httpboot.ParseQuery(again.Encode())
		if err != nil || c2.MAC.String() != c.MAC.String() || c2.UUID != c.UUID || c2.Arch != c.Arch {
			t.Fatalf("%q: parsed %+v, which parses again as %+v, %v", q, c, c2, err)
		}
		s := ipxe.Script(boot.Policy{PublicURL: "http://h"}.Decide(nil, c), c)
		if n := bytes.Count(s, []byte("\n")); n != 10 {
			t.Fatalf("%q: script has %d lines, want 10:\n%s", q, n, s)
		}
	})
}
