// Package ekrsa decrypts TPM credential seeds (RSA-OAEP with SHA-256, as
// TPM2_ActivateCredential does with an RSA EK) for the enrollment
// benchmark's software TPMs. With cgo it calls OpenSSL's libcrypto, which
// on the x86-64 machines this project is measured on decrypts RSA 2048
// about three times faster than Go's constant-time crypto/rsa; without cgo
// it is crypto/rsa. It is part of a load generator: the faster the load
// generator, the more of the machine's cores the measured daemon gets.
// Nothing in the product uses it.
package ekrsa
