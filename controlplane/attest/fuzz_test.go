package attest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// FuzzParsePublic feeds the public-area parsers what an agent could send
// as ek_public or ak_public.
func FuzzParsePublic(f *testing.F) {
	rsaPriv, eccPriv := newEKKeys(f)
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

// FuzzDirectDecoders holds the direct decoders of wire.go to the
// reflection decoder: whatever a direct decoder accepts, unmarshal
// accepts too, both encode back to the same bytes, and the checks built
// on them (EK, AK, signature scheme) decide the same way.
func FuzzDirectDecoders(f *testing.F) {
	rsaPriv, eccPriv := newEKKeys(f)
	nonce := []byte("0123456789abcdef0123456789abcdef")
	q := goodQuote(nonce, testPCRs()).marshal()
	f.Add(tpm2.Marshal(ekPublic(f, &rsaPriv.PublicKey)))
	f.Add(tpm2.Marshal(ekPublic(f, &eccPriv.PublicKey)))
	for _, k := range []softKey{newSoftECCAK(f), newSoftRSAAK(f)} {
		f.Add(k.public())
		f.Add(k.sign(f, q))
	}
	f.Add(tpm2.Marshal(tpm2.RSASRKTemplate))
	f.Add(tpm2.Marshal(tpm2.ECCSRKTemplate))
	f.Add(q)

	f.Fuzz(func(t *testing.T, b []byte) {
		if pub, ok := decodePublic(b); ok {
			slow := sameAsUnmarshal(t, b, pub)
			k1, e1 := ekKey(pub)
			k2, e2 := ekKey(slow)
			if fmt.Sprint(k1, e1) != fmt.Sprint(k2, e2) {
				t.Errorf("ekKey: direct %v, %v; unmarshal %v, %v", k1, e1, k2, e2)
			}
			s1, h1, e1 := akScheme(pub)
			s2, h2, e2 := akScheme(slow)
			if s1 != s2 || h1 != h2 || fmt.Sprint(e1) != fmt.Sprint(e2) {
				t.Errorf("akScheme: direct %v %v %v; unmarshal %v %v %v", s1, h1, e1, s2, h2, e2)
			}
			if e1 == nil {
				if _, err := tpm2.ImportEncapsulationKey(pub); err != nil && ekKeyOK(pub) {
					t.Errorf("an EK the direct decoder read cannot encapsulate: %v", err)
				}
			}
		}
		if a, ok := decodeQuote(b); ok {
			slow := sameAsUnmarshal(t, b, a)
			i1, e1 := a.Attested.Quote()
			i2, e2 := slow.Attested.Quote()
			if e1 != nil || e2 != nil || !bytes.Equal(tpm2.Marshal(*i1), tpm2.Marshal(*i2)) {
				t.Errorf("quote info: direct %v; unmarshal %v", e1, e2)
			}
		}
		if sig, ok := decodeSignature(b); ok {
			sameAsUnmarshal(t, b, sig)
		}
	})
}

func ekKeyOK(pub *tpm2.TPMTPublic) bool {
	_, err := ekKey(pub)
	return err == nil
}

// sameAsUnmarshal checks that unmarshal accepts b, and that it and the
// direct decoder's result d both encode to b; it returns unmarshal's.
func sameAsUnmarshal[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](t *testing.T, b []byte, d *T) *T {
	t.Helper()
	slow, err := unmarshal[T, P](b, "fuzz")
	if err != nil {
		t.Fatalf("the direct decoder accepted %x, unmarshal refuses it: %v", b, err)
	}
	if got := tpm2.Marshal(*d); !bytes.Equal(got, b) {
		t.Fatalf("the direct decoder's result encodes to\n%x\nnot\n%x", got, b)
	}
	return slow
}

// TestDirectDecoders: the structures of an ordinary enrollment take the
// direct path (else FuzzDirectDecoders would compare nothing), and what
// they refuse is left to unmarshal.
func TestDirectDecoders(t *testing.T) {
	rsaPriv, eccPriv := newEKKeys(t)
	q := goodQuote([]byte("nonce"), testPCRs()).marshal()
	for name, b := range map[string][]byte{
		"RSA EK": tpm2.Marshal(ekPublic(t, &rsaPriv.PublicKey)),
		"ECC EK": tpm2.Marshal(ekPublic(t, &eccPriv.PublicKey)),
		"ECC AK": newSoftECCAK(t).public(),
		"RSA AK": newSoftRSAAK(t).public(),
	} {
		pub, ok := decodePublic(b)
		if !ok {
			t.Errorf("%s: not decoded directly", name)
			continue
		}
		sameAsUnmarshal(t, b, pub)
		if _, ok := decodePublic(append(b, 0)); ok {
			t.Errorf("%s: a trailing byte was accepted", name)
		}
		if _, ok := decodePublic(b[:len(b)-1]); ok {
			t.Errorf("%s: a short read was accepted", name)
		}
	}
	a, ok := decodeQuote(q)
	if !ok {
		t.Fatal("quote: not decoded directly")
	}
	sameAsUnmarshal(t, q, a)
	for name, k := range map[string]softKey{"ECDSA": newSoftECCAK(t), "RSA": newSoftRSAAK(t)} {
		sig := k.sign(t, q)
		d, ok := decodeSignature(sig)
		if !ok {
			t.Errorf("%s signature: not decoded directly", name)
			continue
		}
		sameAsUnmarshal(t, sig, d)
	}
	bad := bytes.Clone(q)
	bad[0] ^= 1 // magic
	if _, ok := decodeQuote(bad); ok {
		t.Error("a quote without TPM_GENERATED_VALUE was decoded directly")
	}
}

// FuzzVerifyNodeKey feeds VerifyNodeKey what an agent could send as
// key_public, certify_info, certify_signature and csr, against an AK of
// each kind.
func FuzzVerifyNodeKey(f *testing.F) {
	eccAK, rsaAK := newSoftECCAK(f), newSoftRSAAK(f)
	var aks []*AK
	for _, k := range []softKey{eccAK, rsaAK} {
		ak, err := ParseAKPublic(k.public())
		if err != nil {
			f.Fatal(err)
		}
		aks = append(aks, ak)
		r := goodNodeKeyRequest(f, k, newSoftNodeKey(f, nodeKeyAttributes()))
		f.Add(r.keyPublic, r.info, r.sig, r.csr)
	}
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})

	f.Fuzz(func(t *testing.T, keyPublic, info, sig, csr []byte) {
		for _, ak := range aks {
			k, err := ak.VerifyNodeKey(keyPublic, info, sig, csr)
			if err == nil && (k.Key == nil || k.CSR == nil || len(k.Name) < 2+32) {
				t.Errorf("accepted with key %v, CSR %v, name %x", k.Key, k.CSR, k.Name)
			}
		}
	})
}
