// Package agent will hold attestation-agent: the static program that runs as
// /init of the network-booted initramfs, reads the TPM, registers, attests,
// waits for approval, fetches its one-time config and heartbeats. It talks
// to the control plane only through the AgentService of package proto and
// never imports the control plane.
package agent
