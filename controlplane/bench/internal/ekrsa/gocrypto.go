//go:build !cgo

package ekrsa

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
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

// DecryptOAEP decrypts ciphertext with RSA-OAEP, SHA-256 and label, which
// must be the label the key was loaded for.
func (k *Key) DecryptOAEP(ciphertext, label []byte) ([]byte, error) {
	if !bytes.Equal(label, k.label) {
		return nil, fmt.Errorf("ekrsa: key loaded for label %q, not %q", k.label, label)
	}
	return rsa.DecryptOAEP(sha256.New(), nil, k.k, ciphertext, label)
}
