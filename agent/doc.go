// Package agent is attestation-agent: the static program that runs as
// /init of the network-booted initramfs (or as an ordinary program), reads
// the TPM, registers, attests, waits for approval, fetches its one-time
// config and heartbeats; beside that, from the first attestation on, it
// keeps a node certificate for a key its TPM holds (certs.go), renewed at
// two thirds of its life, which its HTTP client presents to a control
// plane that asks for one. It talks to the control plane only through the
// AgentService of package proto and never imports the control plane.
//
// Run is the protocol, the same in both modes; RunInit is what process 1
// does before it (mounts, NIC modules, DHCP, settings from the kernel
// command line, see package sysinit and netconf); ParseArgs reads the
// ordinary program's flags and environment.
//
// Every step logs one line with a fixed message, so that a console or a
// test can follow a machine with grep: "tpm opened", "ek read",
// "registered", "credential activated", "quote sent", "attested",
// "waiting for approval", "approved" (or "approved as attested", for a
// machine pre-registered with a role and hostname, whose Attest answer
// carries its config URL), "config written", "heartbeat"; and
// "certificate issued", "certificate renewed".
package agent
