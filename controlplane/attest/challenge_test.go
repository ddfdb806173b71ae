package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestNewChallengeShape(t *testing.T) {
	rsaPriv, eccPriv := newEKKeys(t)
	ak, err := ParseAKPublic(newSoftECCAK(t).public())
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]any{"rsa": &rsaPriv.PublicKey, "ecc": &eccPriv.PublicKey} {
		t.Run(name, func(t *testing.T) {
			ekPub := tpm2.Marshal(ekPublic(t, key))
			c1, err := NewChallenge(ekPub, ak.Name)
			if err != nil {
				t.Fatalf("NewChallenge: %v", err)
			}
			c2, err := NewChallenge(ekPub, ak.Name)
			if err != nil {
				t.Fatalf("NewChallenge: %v", err)
			}
			if len(c1.Secret) != SecretSize || len(c1.Nonce) != NonceSize {
				t.Errorf("secret %d bytes, nonce %d bytes; want %d and %d", len(c1.Secret), len(c1.Nonce), SecretSize, NonceSize)
			}
			if bytes.Equal(c1.Secret, c2.Secret) || bytes.Equal(c1.Nonce, c2.Nonce) || bytes.Equal(c1.EncryptedSecret, c2.EncryptedSecret) {
				t.Error("two challenges share a secret, nonce or encrypted secret")
			}
			if bytes.Contains(c1.CredentialBlob, c1.Secret) || bytes.Contains(c1.EncryptedSecret, c1.Secret) {
				t.Error("the secret appears in clear in the challenge")
			}
			// The blob is a TPM2B_DIGEST HMAC followed by the encrypted
			// identity: 2 + 32 + (2 + 32).
			if len(c1.CredentialBlob) != 2+32+2+SecretSize {
				t.Errorf("credential blob of %d bytes, want %d", len(c1.CredentialBlob), 2+32+2+SecretSize)
			}
			if name == "rsa" && len(c1.EncryptedSecret) != 256 {
				t.Errorf("RSA encrypted secret of %d bytes, want 256", len(c1.EncryptedSecret))
			}
		})
	}
}

func TestNewChallengeRefuses(t *testing.T) {
	eccPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ekPub := tpm2.Marshal(ekPublic(t, &eccPriv.PublicKey))
	ak, err := ParseAKPublic(newSoftECCAK(t).public())
	if err != nil {
		t.Fatal(err)
	}
	sha1Name := append([]byte{0, 4}, make([]byte, 20)...)
	for _, tc := range []struct {
		name          string
		ekPub, akName []byte
		wantErr       string
	}{
		{"empty EK", nil, ak.Name, "empty"},
		{"AK as EK", newSoftECCAK(t).public(), ak.Name, "lacks attribute decrypt"},
		{"empty name", ekPub, nil, "name of 0 bytes"},
		{"short name", ekPub, ak.Name[:20], "name of 20 bytes"},
		{"SHA-1 name", ekPub, sha1Name, "name algorithm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewChallenge(tc.ekPub, tc.akName); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewChallenge = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSecretsEqual(t *testing.T) {
	a := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name string
		x, y []byte
		want bool
	}{
		{"same", a, bytes.Clone(a), true},
		{"one byte differs", a, append(bytes.Clone(a[:31]), 'x'), false},
		{"prefix", a, a[:16], false},
		{"empty", nil, nil, false},
		{"empty and not", nil, a, false},
	} {
		if got := SecretsEqual(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: SecretsEqual = %v, want %v", tc.name, got, tc.want)
		}
	}
}
