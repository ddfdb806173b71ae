// Package attestation is the root of the attestation control plane, which
// takes bare-metal machines from power-on to provisioned: it network-boots
// an agent, proves each machine's identity with its TPM, holds it until an
// operator approves it, hands it a one-time config, and tells every
// compiled-in extension what happened.
//
// The folders are the architecture: agent (the booted agent), controlplane
// (the daemon: API, store, lifecycle, events), boot (DHCP, TFTP, HTTP
// boot), proto (the API definitions and generated code), extensions (the
// extension registry and the extensions that ship), cli (the operator CLI),
// images (initramfs and ISO building) and packaging (the Debian packages
// and the container image, a module of its own).
package attestation
