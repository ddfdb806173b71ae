package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// FuzzParsePublic feeds the public-area parsers what an agent could send
// as ek_public or ak_public.
func FuzzParsePublic(f *testing.F) {
	rsaPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	eccPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tpm2.Marshal(ekPublic(f, &rsaPriv.PublicKey)))
	f.Add(tpm2.Marshal(ekPublic(f, &eccPriv.PublicKey)))
	f.Add(newSoftECCAK(f).public())
	f.Add(newSoftRSAAK(f).public())
	f.Add(tpm2.Marshal(tpm2.RSASRKTemplate))
	f.Add([]byte{})
	akName := append([]byte{0, 0x0b}, make([]byte, 32)...)

	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseEKPublic(b); err == nil {
			if _, err := NewChallenge(b, akName); err != nil {
				t.Errorf("NewChallenge refused an EK that ParseEKPublic accepted: %v", err)
			}
		}
		if ak, err := ParseAKPublic(b); err == nil {
			if len(ak.Name) < 2+32 {
				t.Errorf("AK name of %d bytes", len(ak.Name))
			}
		}
	})
}

// FuzzVerifyQuote feeds VerifyQuote what an agent could send as ak_public,
// quote and quote_signature.
func FuzzVerifyQuote(f *testing.F) {
	nonce := []byte("0123456789abcdef0123456789abcdef")
	pcrs := testPCRs()
	for _, k := range []softKey{newSoftECCAK(f), newSoftRSAAK(f)} {
		q := goodQuote(nonce, pcrs).marshal()
		f.Add(k.public(), q, k.sign(f, q))
	}
	f.Add([]byte{}, []byte{}, []byte{})

	f.Fuzz(func(t *testing.T, ak, quote, sig []byte) {
		VerifyQuote(ak, quote, sig, nonce, pcrs)
	})
}
