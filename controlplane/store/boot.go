package store

import (
	"context"
	"strings"
)

// MachineByMAC returns the machine that reported mac, or ErrNotFound. mac
// is compared as stored: lower-case and colon-separated. When several
// machines reported it (a NIC moved to another server), the most recently
// registered one wins: it is the one that last booted with it.
func (s *Store) MachineByMAC(ctx context.Context, mac string) (*Machine, error) {
	mac = strings.ToLower(mac)
	// The MACs are a JSON array per row, so this scans the table; the
	// LIKE test skips most rows before the JSON is parsed.
	return scanMachine(s.r.QueryRowContext(ctx, s.d.machineByMAC, `%"`+escapeLike(mac)+`"%`, mac))
}

// MachineBySMBIOSUUID returns the most recently registered machine with
// the given SMBIOS UUID (either case), or ErrNotFound.
func (s *Store) MachineBySMBIOSUUID(ctx context.Context, id string) (*Machine, error) {
	return scanMachine(s.r.QueryRowContext(ctx, `SELECT `+machineColumns+` FROM machines
		WHERE smbios_uuid IN (?, ?) AND smbios_uuid != ''
		ORDER BY registered_at DESC, id DESC LIMIT 1`, strings.ToLower(id), strings.ToUpper(id)))
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
