//go:build !cgo

package ekrsa

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
)

// Key is an RSA private key for one label.
type Key struct {
	k     *rsa.PrivateKey
	label []byte
}

// Load loads k for RSA-OAEP decryption with SHA-256 under label.
func Load(k *rsa.PrivateKey, label []byte) (*Key, error) {
	k.Precompute()
	return &Key{k: k, label: bytes.Clone(label)}, nil
}

// DecryptOAEP decrypts ciphertext with RSA-OAEP, SHA-256 and the label
// the key was loaded for.
func (k *Key) DecryptOAEP(ciphertext []byte) ([]byte, error) {
	return rsa.DecryptOAEP(sha256.New(), nil, k.k, ciphertext, k.label)
}
