// Package boot holds network boot: proxy and full DHCP (boot/dhcp), TFTP
// for the iPXE binaries (boot/tftp), HTTP boot (boot/httpboot), the
// per-machine iPXE scripts (boot/ipxe), all driven by one boot decision,
// and the IPv6 router advertisements that spare iPXE its wait for routers
// (boot/ndp).
//
// The decision is [Policy.Decide]: given what a booting client said about
// itself ([Client]: MAC, SMBIOS UUID, architecture, whether it is iPXE)
// and the stored machine that matches it (nil when none does), it says
// what the client boots:
//
//	unknown, registered, attested  boot the agent (kernel + agent initramfs,
//	                               attestation.url=PUBLIC_URL)
//	provisioned                    its schematic's image, else the local disk
//	                               (iPXE "exit 1")
//	decommissioned                 nothing: DHCP and TFTP stay silent, HTTP
//	                               answers 403
//
// [Resolver] finds the machine in the store (by MAC, then SMBIOS UUID)
// and applies the decision; every protocol calls it the same way. MAC and
// UUID are forgeable: they choose what a machine boots, never what it is
// trusted with. The agent proves the machine's identity with its TPM.
package boot
