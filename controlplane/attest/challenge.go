package attest

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// SecretSize and NonceSize are the sizes of a challenge's random values.
const (
	SecretSize = 32
	NonceSize  = 32
)

// Challenge is a credential-activation challenge and a quote nonce.
type Challenge struct {
	// CredentialBlob is the contents of the TPM2B_ID_OBJECT (no size
	// prefix): RegisterResponse.credential_blob, which the agent passes to
	// TPM2_ActivateCredential as credentialBlob.
	CredentialBlob []byte
	// EncryptedSecret is the contents of the TPM2B_ENCRYPTED_SECRET (no size
	// prefix): RegisterResponse.encrypted_secret, the ActivateCredential
	// secret. For an RSA EK it is the RSA-OAEP ciphertext (label
	// "IDENTITY\0"); for an ECC EK the marshalled ephemeral TPMS_ECC_POINT.
	EncryptedSecret []byte
	// Secret is what the agent must send back. Keep it only hashed or
	// encrypted; compare with SecretsEqual.
	Secret []byte
	// Nonce is the quote's qualifying data: RegisterResponse.nonce.
	Nonce []byte
}

// NewChallenge makes a credential for the EK (its TPMT_PUBLIC, as the agent
// sent it) bound to akName (as ParseAKPublic computed it, never as the agent
// claims it) over a random secret, and a fresh quote nonce. Only the TPM
// holding that EK, with an AK of that name loaded, can recover the secret.
func NewChallenge(ekPublic, akName []byte) (*Challenge, error) {
	ek, err := ParseEK(ekPublic)
	if err != nil {
		return nil, fmt.Errorf("new challenge: %w", err)
	}
	return newChallenge(rand.Reader, ek, akName)
}

// NewChallenge is the package's NewChallenge for an EK parsed already.
func (ek *EK) NewChallenge(akName []byte) (*Challenge, error) {
	return newChallenge(rand.Reader, ek, akName)
}

func newChallenge(random io.Reader, ek *EK, akName []byte) (*Challenge, error) {
	if err := checkName(akName); err != nil {
		return nil, fmt.Errorf("new challenge: AK %w", err)
	}
	key, err := tpm2.ImportEncapsulationKey(ek.pub)
	if err != nil {
		return nil, fmt.Errorf("new challenge: EK: %w", err)
	}
	secret := make([]byte, SecretSize)
	nonce := make([]byte, NonceSize)
	if _, err := io.ReadFull(random, secret); err != nil {
		return nil, fmt.Errorf("new challenge: %w", err)
	}
	if _, err := io.ReadFull(random, nonce); err != nil {
		return nil, fmt.Errorf("new challenge: %w", err)
	}
	blob, encSecret, err := tpm2.CreateCredential(random, key, akName, secret)
	if err != nil {
		return nil, fmt.Errorf("new challenge: create credential: %w", err)
	}
	return &Challenge{CredentialBlob: blob, EncryptedSecret: encSecret, Secret: secret, Nonce: nonce}, nil
}

// checkName accepts a TPM object name: a hash algorithm and a digest of
// that algorithm's size.
func checkName(name []byte) error {
	if len(name) < 2 {
		return fmt.Errorf("name of %d bytes", len(name))
	}
	h, err := nameHash(tpm2.TPMAlgID(uint16(name[0])<<8 | uint16(name[1])))
	if err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if len(name) != 2+h.Size() {
		return fmt.Errorf("name of %d bytes for %v", len(name), h)
	}
	return nil
}

// SecretsEqual compares a returned secret with the expected one in
// constant time. Empty secrets are never equal.
func SecretsEqual(a, b []byte) bool {
	return len(a) > 0 && subtle.ConstantTimeCompare(a, b) == 1
}
