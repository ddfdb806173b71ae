package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// nodeKeyAttributes are those of the agent's node key.
func nodeKeyAttributes() tpm2.TPMAObject {
	return tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, SignEncrypt: true,
	}
}

func newSoftNodeKey(t testing.TB, attrs tpm2.TPMAObject) softKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return softECCAK(priv, attrs)
}

// name is the TPM name of a public area, computed apart from the code
// under test.
func name(pub []byte) []byte {
	sum := sha256.Sum256(pub)
	return append([]byte{0, 0x0b}, sum[:]...)
}

func newCSR(t testing.TB, k softKey) []byte {
	t.Helper()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node"}}, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// nodeKeyRequest is what the agent sends for a node certificate.
type nodeKeyRequest struct {
	keyPublic, info, sig, csr []byte
}

// goodNodeKeyRequest is a request as the agent makes it: key certified by
// ak over the SHA-256 of a CSR signed by key.
func goodNodeKeyRequest(t testing.TB, ak, key softKey) nodeKeyRequest {
	t.Helper()
	return certifyRequest(t, ak, nodeKeyRequest{keyPublic: key.public(), csr: newCSR(t, key)}, nil)
}

// certifyRequest has ak certify r's key over r's CSR, as it is, with
// change (when not nil) applied to the certification first.
func certifyRequest(t testing.TB, ak softKey, r nodeKeyRequest, change func(*quoteSpec)) nodeKeyRequest {
	t.Helper()
	sum := sha256.Sum256(r.csr)
	spec := quoteSpec{magic: tpm2.TPMGeneratedValue, typ: tpm2.TPMSTAttestCertify, nonce: sum[:], name: name(r.keyPublic)}
	if change != nil {
		change(&spec)
	}
	r.info = spec.marshal()
	r.sig = ak.sign(t, r.info)
	return r
}

func TestVerifyNodeKey(t *testing.T) {
	for _, akType := range []string{"ECC", "RSA"} {
		t.Run(akType+" AK", func(t *testing.T) {
			ak := newSoftECCAK(t)
			if akType == "RSA" {
				ak = newSoftRSAAK(t)
			}
			parsed, err := ParseAKPublic(ak.public())
			if err != nil {
				t.Fatal(err)
			}
			key := newSoftNodeKey(t, nodeKeyAttributes())
			r := goodNodeKeyRequest(t, ak, key)
			got, err := parsed.VerifyNodeKey(r.keyPublic, r.info, r.sig, r.csr)
			if err != nil {
				t.Fatalf("VerifyNodeKey: %v", err)
			}
			if !publicKeysEqual(got.Key, key.priv.Public()) || !bytes.Equal(got.Name, name(key.public())) || got.CSR == nil {
				t.Errorf("got key %v, name %x, CSR %v; want the node key, its name and the CSR", got.Key, got.Name, got.CSR)
			}
		})
	}
}

func TestVerifyNodeKeyRefusals(t *testing.T) {
	ak := newSoftECCAK(t)
	parsed, err := ParseAKPublic(ak.public())
	if err != nil {
		t.Fatal(err)
	}
	key := newSoftNodeKey(t, nodeKeyAttributes())
	// withAttributes is a request for a key with other attributes,
	// certified as such.
	withAttributes := func(change func(*tpm2.TPMAObject)) nodeKeyRequest {
		a := nodeKeyAttributes()
		change(&a)
		k := softECCAK(key.priv.(*ecdsa.PrivateKey), a)
		return goodNodeKeyRequest(t, ak, k)
	}
	// certified is a request whose certification is changed by change.
	certified := func(change func(*quoteSpec)) nodeKeyRequest {
		return certifyRequest(t, ak, goodNodeKeyRequest(t, ak, key), change)
	}
	for _, c := range []struct {
		name      string
		req       func() nodeKeyRequest
		want      string
		malformed bool
	}{
		{"signed by another AK", func() nodeKeyRequest {
			return goodNodeKeyRequest(t, newSoftECCAK(t), key)
		}, "not signed by this machine's AK", false},
		{"signed by an AK of another type", func() nodeKeyRequest {
			return goodNodeKeyRequest(t, newSoftRSAAK(t), key)
		}, "not signed by this machine's AK", false},
		{"CSR of another key", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.csr = newCSR(t, newSoftNodeKey(t, nodeKeyAttributes()))
			// Certified over this CSR, so that only the key differs.
			return certifyRequest(t, ak, r, nil)
		}, "the CSR's key is not the certified key", false},
		{"certified for another CSR", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.csr = newCSR(t, key)
			return r
		}, "not for this CSR", false},
		{"certifies another key", func() nodeKeyRequest {
			return certified(func(s *quoteSpec) { s.name = name(newSoftNodeKey(t, nodeKeyAttributes()).public()) })
		}, "another key than key_public", false},
		{"key_public of another key", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.keyPublic = newSoftNodeKey(t, nodeKeyAttributes()).public()
			return r
		}, "another key than key_public", false},
		{"exportable: fixedTPM clear", func() nodeKeyRequest {
			return withAttributes(func(a *tpm2.TPMAObject) { a.FixedTPM = false })
		}, "the key is exportable (fixedTPM not set)", false},
		{"exportable: fixedParent clear", func() nodeKeyRequest {
			return withAttributes(func(a *tpm2.TPMAObject) { a.FixedParent = false })
		}, "the key is exportable (fixedParent not set)", false},
		{"imported", func() nodeKeyRequest {
			return withAttributes(func(a *tpm2.TPMAObject) { a.SensitiveDataOrigin = false })
		}, "sensitiveDataOrigin not set", false},
		{"decrypt key", func() nodeKeyRequest {
			return withAttributes(func(a *tpm2.TPMAObject) { a.Decrypt = true })
		}, "the key can decrypt", false},
		{"not a signing key", func() nodeKeyRequest {
			return withAttributes(func(a *tpm2.TPMAObject) { a.SignEncrypt, a.Decrypt = false, true })
		}, "the key cannot sign", false},
		{"restricted key", func() nodeKeyRequest {
			return withAttributes(func(a *tpm2.TPMAObject) { a.Restricted = true })
		}, "the key is restricted", false},
		{"not TPM-generated", func() nodeKeyRequest {
			return certified(func(s *quoteSpec) { s.magic = 0x12345678 })
		}, "not TPM_GENERATED_VALUE", false},
		{"a quote", func() nodeKeyRequest {
			return certified(func(s *quoteSpec) {
				q := goodQuote(s.nonce, testPCRs())
				s.typ, s.banks, s.digest = q.typ, q.banks, q.digest
			})
		}, "not a key certification", false},
		{"bad CSR signature", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.csr = bytes.Clone(r.csr)
			r.csr[len(r.csr)-3] ^= 0x01 // in the signature's S
			return certifyRequest(t, ak, r, nil)
		}, "the CSR's signature does not verify", false},
		{"no CSR", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.csr = nil
			return r
		}, "CSR: empty", true},
		{"CSR not DER", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.csr = []byte("-----BEGIN CERTIFICATE REQUEST-----")
			return certifyRequest(t, ak, r, nil)
		}, "CSR", true},
		{"certify_info truncated", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.info = r.info[:len(r.info)-1]
			return r
		}, "TPMS_ATTEST", true},
		{"key_public truncated", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.keyPublic = r.keyPublic[:10]
			return r
		}, "TPMT_PUBLIC", true},
		{"signature truncated", func() nodeKeyRequest {
			r := goodNodeKeyRequest(t, ak, key)
			r.sig = r.sig[:5]
			return r
		}, "TPMT_SIGNATURE", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.req()
			_, err := parsed.VerifyNodeKey(r.keyPublic, r.info, r.sig, r.csr)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if got := errors.Is(err, ErrMalformed); got != c.malformed {
				t.Errorf("errors.Is(%v, ErrMalformed) = %v, want %v", err, got, c.malformed)
			}
		})
	}
}
