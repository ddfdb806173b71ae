//go:build cgo

package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestNodeKey: the node key is a signing key the TPM will not export, the
// same on every boot; it signs in the TPM, and the AK certifies it over
// the SHA-256 of the CSR it signed.
func TestNodeKey(t *testing.T) {
	a := newAttester(t, openSim(t, "simulator:7"), Options{})
	k, err := a.NodeKey()
	if err != nil {
		t.Fatalf("NodeKey: %v", err)
	}
	if again, err := a.NodeKey(); err != nil || again != k {
		t.Errorf("NodeKey again = %p, %v; want the same key %p", again, err, k)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.PublicArea())
	if err != nil {
		t.Fatal(err)
	}
	attrs := pub.ObjectAttributes
	if !attrs.FixedTPM || !attrs.FixedParent || !attrs.SensitiveDataOrigin || !attrs.SignEncrypt || attrs.Decrypt || attrs.Restricted {
		t.Errorf("node key attributes %+v, want fixedTPM, fixedParent, sensitiveDataOrigin, sign; not decrypt, not restricted", attrs)
	}
	sum := sha256.Sum256(k.PublicArea())
	if want := append([]byte{0, 0x0b}, sum[:]...); !bytes.Equal(k.Name(), want) {
		t.Errorf("name %x, want %x", k.Name(), want)
	}

	digest := sha256.Sum256([]byte("hello"))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Error("the node key's signature does not verify with its public key")
	}
	if _, err := k.Sign(rand.Reader, make([]byte, 48), crypto.SHA384); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("Sign(SHA-384) = %v, want a refusal naming SHA-256", err)
	}

	req, err := k.CertificateRequest("node-1")
	if err != nil {
		t.Fatalf("CertificateRequest: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CSR signature: %v", err)
	}
	if !k.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey) || csr.Subject.CommonName != "node-1" {
		t.Errorf("CSR for %v (%s), want the node key and node-1", csr.PublicKey, csr.Subject.CommonName)
	}
	if !bytes.Equal(req.KeyPublic, k.PublicArea()) {
		t.Error("the request's key_public is not the node key's public area")
	}
	attest, err := tpm2.Unmarshal[tpm2.TPMSAttest](req.CertifyInfo)
	if err != nil {
		t.Fatal(err)
	}
	info, err := attest.Attested.Certify()
	if err != nil {
		t.Fatalf("certify info: %v (type %v)", err, attest.Type)
	}
	csrSum := sha256.Sum256(req.CSR)
	if !bytes.Equal(attest.ExtraData.Buffer, csrSum[:]) || !bytes.Equal(info.Name.Buffer, k.Name()) {
		t.Errorf("certified %x over %x, want %x over %x", info.Name.Buffer, attest.ExtraData.Buffer, k.Name(), csrSum)
	}
	tsig, err := tpm2.Unmarshal[tpm2.TPMTSignature](req.CertifySignature)
	if err != nil {
		t.Fatal(err)
	}
	ecc, err := tsig.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	infoSum := sha256.Sum256(req.CertifyInfo)
	r, s := new(big.Int).SetBytes(ecc.SignatureR.Buffer), new(big.Int).SetBytes(ecc.SignatureS.Buffer)
	if !ecdsa.Verify(a.AK().Key.(*ecdsa.PublicKey), infoSum[:], r, s) {
		t.Error("the certification is not signed by the AK")
	}

	// The same TPM booted again derives the same key.
	public := k.PublicArea()
	a.Close()
	if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err == nil {
		t.Error("Sign after Close succeeded")
	}
	b := newAttester(t, openSim(t, "simulator:7"), Options{})
	k2, err := b.NodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k2.PublicArea(), public) {
		t.Error("the node key changed across boots of the same TPM")
	}
}
