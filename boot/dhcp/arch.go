package dhcp

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Arch says what one client architecture (DHCP option 93, RFC 4578 and
// the IANA "Processor Architecture Types" registry) boots first.
type Arch struct {
	// Name is short and stable: it appears in logs, metrics and the iPXE
	// script URL.
	Name string `json:"name"`
	// File is the iPXE binary the firmware loads: a TFTP file name, or a
	// path under the public URL's boot assets (boot.AssetsPath) when HTTP
	// is set.
	File string `json:"file"`
	// HTTP marks UEFI HTTP boot clients: they get an http(s) URL and
	// option 60 HTTPClient back instead of a TFTP file name.
	HTTP bool `json:"http,omitempty"`
}

// ArchTable maps option 93 values to what those clients boot.
type ArchTable map[uint16]Arch

// DefaultArchTable is the table used when none is configured. The x86
// names are those of Debian's ipxe package (which ships no snp.efi);
// Debian has no arm64 iPXE, so arm64 uses the name iPXE's arm64 snponly
// build is usually published under.
func DefaultArchTable() ArchTable {
	return ArchTable{
		0:  {Name: "bios", File: "undionly.kpxe"},
		7:  {Name: "x86-64-efi", File: "snponly.efi"},
		9:  {Name: "x86-64-efi", File: "snponly.efi"},
		11: {Name: "arm64-efi", File: "snp-arm64.efi"},
		16: {Name: "x86-64-efi-http", File: "snponly.efi", HTTP: true},
		19: {Name: "arm64-efi-http", File: "snp-arm64.efi", HTTP: true},
	}
}

// Validate says what is wrong with the first bad entry.
func (t ArchTable) Validate() error {
	if len(t) == 0 {
		return fmt.Errorf("arch table: empty")
	}
	for _, code := range t.codes() {
		a := t[code]
		if a.Name == "" || strings.ContainsAny(a.Name, " \t\n&?=/") {
			return fmt.Errorf("arch table: %d: name %q: want a short word", code, a.Name)
		}
		if a.File == "" || strings.Contains(a.File, "..") || strings.HasPrefix(a.File, "/") {
			return fmt.Errorf("arch table: %d (%s): file %q: want a relative name", code, a.Name, a.File)
		}
	}
	return nil
}

func (t ArchTable) codes() []uint16 {
	codes := make([]uint16, 0, len(t))
	for c := range t {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool { return codes[i] < codes[j] })
	return codes
}

// classArch reads the architecture from a vendor class such as
// "PXEClient:Arch:00007:UNDI:003016", for firmwares that omit option 93.
func classArch(class string) (uint16, bool) {
	parts := strings.Split(class, ":")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "Arch" {
			n, err := strconv.ParseUint(parts[i+1], 10, 16)
			return uint16(n), err == nil
		}
	}
	return 0, false
}
