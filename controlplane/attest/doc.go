// Package attest is the control plane's side of the attestation protocol:
// it parses and checks what an agent presents (EK public key, EK
// certificate, AK public area), makes the credential-activation challenge
// bound to the AK, and verifies the agent's answer (the quote).
//
// Everything here is pure Go over the TPM 2.0 wire structures; no TPM is
// needed at run time. Storing challenges, expiring them and making them
// single use is the caller's job.
//
// Errors wrapping ErrMalformed mean the input could not be parsed; every
// other error is a refusal of well-formed input.
package attest
