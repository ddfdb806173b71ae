// Package boot will hold network boot: proxy and full DHCP, TFTP for the
// iPXE binaries, HTTP boot and the per-machine iPXE scripts, all driven by
// one boot decision.
package boot
