// Package dhcp answers network-booting machines over DHCPv4: in proxy mode
// (the default) beside the site's own DHCP server, answering only PXE and
// UEFI HTTP boot clients with where to fetch their first program and never
// handing out addresses, on port 67 and on the PXE boot-server port 4011;
// or in full mode as the network's DHCP server, with an address pool,
// reservations by MAC, a cap on the leases of unknown clients, and leases
// kept in the database (SQLLeases) across restarts.
//
// The packet handling is pure (bytes in, reply and destination out) so it
// is tested and fuzzed without sockets; Server adds the sockets (read and
// written several datagrams per system call), answers on the reading
// goroutine what needs no I/O, and hands what does (boot decisions, lease
// commits) to a fixed worker pool through a bounded queue that drops the
// oldest packets first under a boot storm; and logs and metrics.
package dhcp
