package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestParseAKPublicAttributes(t *testing.T) {
	base := newSoftECCAK(t)
	for _, tc := range []struct {
		name    string
		change  func(*tpm2.TPMAObject)
		wantErr string
	}{
		{"ok", func(*tpm2.TPMAObject) {}, ""},
		{"not restricted", func(a *tpm2.TPMAObject) { a.Restricted = false }, "lacks attribute restricted"},
		{"not sign", func(a *tpm2.TPMAObject) { a.SignEncrypt = false }, "lacks attribute sign"},
		{"not fixedTPM", func(a *tpm2.TPMAObject) { a.FixedTPM = false }, "lacks attribute fixedTPM"},
		{"not fixedParent", func(a *tpm2.TPMAObject) { a.FixedParent = false }, "lacks attribute fixedParent"},
		{"not sensitiveDataOrigin", func(a *tpm2.TPMAObject) { a.SensitiveDataOrigin = false }, "lacks attribute sensitiveDataOrigin"},
		{"several missing", func(a *tpm2.TPMAObject) { a.FixedTPM, a.Restricted = false, false }, "lacks attribute restricted, fixedTPM"},
		{"decrypt", func(a *tpm2.TPMAObject) { a.Decrypt = true }, "decrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := base
			k.pub.ObjectAttributes = akAttributes()
			tc.change(&k.pub.ObjectAttributes)
			ak, err := ParseAKPublic(k.public())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseAKPublic: %v", err)
				}
				name, err := tpm2.ObjectName(&k.pub)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(ak.Name, name.Buffer) {
					t.Errorf("AK name %x, want %x", ak.Name, name.Buffer)
				}
				if !ak.Key.(*ecdsa.PublicKey).Equal(base.priv.Public()) {
					t.Error("AK key differs from the public area")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseAKPublic = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseAKPublicScheme(t *testing.T) {
	k := newSoftECCAK(t)
	p, _ := k.pub.Parameters.ECCDetail()
	c := *p
	c.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}
	k.pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &c)
	if _, err := ParseAKPublic(k.public()); err == nil || !strings.Contains(err.Error(), "signing scheme") {
		t.Errorf("ParseAKPublic(no scheme) = %v, want a signing scheme error", err)
	}
	k = newSoftECCAK(t)
	k.pub.NameAlg = tpm2.TPMAlgSHA1
	if _, err := ParseAKPublic(k.public()); err == nil || !strings.Contains(err.Error(), "name algorithm") {
		t.Errorf("ParseAKPublic(SHA-1 name) = %v, want a name algorithm error", err)
	}
}

// ekPublic fills a standard EK template with key.
func ekPublic(t testing.TB, key any) tpm2.TPMTPublic {
	t.Helper()
	switch k := key.(type) {
	case *rsa.PublicKey:
		pub := tpm2.RSAEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		return pub
	case *ecdsa.PublicKey:
		pub := tpm2.ECCEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
		})
		return pub
	}
	t.Fatalf("key %T", key)
	return tpm2.TPMTPublic{}
}

func TestParseEKPublic(t *testing.T) {
	rsaPriv, eccPriv := newEKKeys(t)
	for _, key := range []interface {
		Equal(x crypto.PublicKey) bool
	}{&rsaPriv.PublicKey, &eccPriv.PublicKey} {
		pub := ekPublic(t, key)
		got, err := ParseEKPublic(tpm2.Marshal(pub))
		if err != nil {
			t.Fatalf("ParseEKPublic(%T): %v", key, err)
		}
		if !key.Equal(got) {
			t.Errorf("ParseEKPublic(%T) returned another key", key)
		}
	}

	for _, tc := range []struct {
		name    string
		change  func(*tpm2.TPMTPublic)
		wantErr string
	}{
		{"signing key", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = true }, "sign"},
		{"not restricted", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false }, "lacks attribute restricted"},
		{"short modulus", func(p *tpm2.TPMTPublic) {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: rsaPriv.N.Bytes()[:128]})
		}, "modulus"},
		{"small key", func(p *tpm2.TPMTPublic) {
			d, _ := p.Parameters.RSADetail()
			c := *d // the template's parameters are shared: change a copy
			c.KeyBits = 1024
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &c)
		}, "1024 bits"},
		{"even exponent", func(p *tpm2.TPMTPublic) {
			d, _ := p.Parameters.RSADetail()
			c := *d
			c.Exponent = 65536
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &c)
		}, "exponent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := ekPublic(t, &rsaPriv.PublicKey)
			tc.change(&pub)
			if _, err := ParseEKPublic(tpm2.Marshal(pub)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseEKPublic = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}

	t.Run("point off the curve", func(t *testing.T) {
		pub := ekPublic(t, &eccPriv.PublicKey)
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{1}, 32)},
			Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{2}, 32)},
		})
		if _, err := ParseEKPublic(tpm2.Marshal(pub)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("ParseEKPublic = %v, want ErrMalformed", err)
		}
	})
	t.Run("trailing bytes", func(t *testing.T) {
		b := append(tpm2.Marshal(ekPublic(t, &rsaPriv.PublicKey)), 0)
		if _, err := ParseEKPublic(b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("ParseEKPublic = %v, want ErrMalformed", err)
		}
	})
}

func TestFingerprint(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	got, err := Fingerprint(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
	if _, err := Fingerprint(struct{}{}); err == nil {
		t.Error("Fingerprint of a non-key succeeded")
	}
}
