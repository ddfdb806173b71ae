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
	// machine_macs (migration 0012) orders a MAC's machines by
	// registration: the newest is the last entry of the MAC's range.
	return scanMachine(s.r.QueryRowContext(ctx, `SELECT `+machineColumns+` FROM machines
		WHERE id = (SELECT machine_id FROM machine_macs WHERE mac = ?
			ORDER BY registered_at DESC, machine_id DESC LIMIT 1)`, strings.ToLower(mac)))
}

// MachineBySMBIOSUUID returns the most recently registered machine with
// the given SMBIOS UUID (either case), or ErrNotFound.
func (s *Store) MachineBySMBIOSUUID(ctx context.Context, id string) (*Machine, error) {
	return scanMachine(s.r.QueryRowContext(ctx, `SELECT `+machineColumns+` FROM machines
		WHERE smbios_uuid IN (?, ?) AND smbios_uuid != ''
		ORDER BY registered_at DESC, id DESC LIMIT 1`, strings.ToLower(id), strings.ToUpper(id)))
}
