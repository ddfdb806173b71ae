// Package tpm is the agent's side of the attestation protocol: it opens the
// machine's TPM, reads the endorsement key (EK) and its certificate, derives
// the attestation key (AK), answers the daemon's credential-activation
// challenge and quotes the PCRs. After attestation it makes the node key,
// the key of the machine's certificate, and has the AK certify it
// (NodeKey).
//
// The AK is a primary key in the endorsement hierarchy, so the TPM derives
// the same key from the same template on every boot and nothing has to be
// stored on disk; the node key is a primary in the owner hierarchy, for the
// same reason. The package never imports the control plane: everything it
// sends is a TPM structure in its standard wire encoding (see EK, AK,
// Attester.ActivateCredential and Attester.Quote).
//
// Everything here builds with CGO_ENABLED=0; only the in-process TPM
// simulator (Open("simulator"), for tests) needs cgo.
package tpm
