package ekrsa

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"
)

var label = []byte("IDENTITY\x00")

func TestDecryptOAEP(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k, err := Load(priv, label)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, seed, label)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.DecryptOAEP(ct)
	if err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("DecryptOAEP = %x, %v; want %x", got, err, seed)
	}
	// A wrong label, a flipped bit and an empty ciphertext are refused.
	other, err := Load(priv, []byte("STORAGE\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.DecryptOAEP(ct); err == nil {
		t.Error("decrypted a ciphertext made under another label")
	}
	bad := bytes.Clone(ct)
	bad[len(bad)/2] ^= 1
	if _, err := k.DecryptOAEP(bad); err == nil {
		t.Error("decrypted a tampered ciphertext")
	}
	if _, err := k.DecryptOAEP(nil); err == nil {
		t.Error("decrypted an empty ciphertext")
	}
}

func BenchmarkDecryptOAEP(b *testing.B) {
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	k, err := Load(priv, label)
	if err != nil {
		b.Fatal(err)
	}
	ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, make([]byte, 32), label)
	for b.Loop() {
		if _, err := k.DecryptOAEP(ct); err != nil {
			b.Fatal(err)
		}
	}
}
