// Package tpmtest makes TPM keys the agent never makes (exportable,
// decrypting, a second AK) and has them certified, for tests of how the
// control plane refuses them. It works on any TPM transport: the
// simulator or swtpm.
package tpmtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	agenttpm "github.com/attestation/attestation/agent/tpm"
)

// Key is an ECC P-256 key made in a TPM for a test. It is a
// crypto.Signer that signs with TPM2_Sign (ECDSA, SHA-256).
type Key struct {
	tpm transport.TPM
	// Handle is the key's transient handle and name.
	Handle tpm2.NamedHandle
	// PublicArea is its TPMT_PUBLIC (tpm2.Marshal encoding, no size prefix).
	PublicArea []byte
	key        *ecdsa.PublicKey
}

// NewKey creates a primary key with attrs in the owner hierarchy (label
// tells apart keys with the same attributes), flushed when the test
// ends. A key that signs and decrypts gets no fixed scheme, as the TPM
// requires; any other an ECDSA SHA-256 one.
func NewKey(t testing.TB, tpm transport.TPM, attrs tpm2.TPMAObject, label string) *Key {
	t.Helper()
	scheme := tpm2.TPMTECCScheme{
		Scheme:  tpm2.TPMAlgECDSA,
		Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
	}
	if attrs.Decrypt && attrs.SignEncrypt {
		scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    scheme,
				CurveID:   tpm2.TPMECCNistP256,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: []byte(label)}}),
		}),
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("create key %q with %+v: %v", label, attrs, err)
	}
	t.Cleanup(func() { tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm) })
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{
		tpm:        tpm,
		Handle:     tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PublicArea: rsp.OutPublic.Bytes(),
		key:        key.(*ecdsa.PublicKey),
	}
}

// Public returns the *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.key }

// Sign signs a SHA-256 digest in the TPM and returns an ASN.1 ECDSA
// signature.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("tpmtest key: want SHA-256, got %v", opts.HashFunc())
	}
	return agenttpm.SignECDSA(k.tpm, k.Handle, digest)
}

// CSR returns a certificate request signed by signer.
func CSR(t testing.TB, signer crypto.Signer) []byte {
	t.Helper()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "tpmtest"}}, signer)
	if err != nil {
		t.Fatalf("CSR: %v", err)
	}
	return csr
}

// Certify has signer certify object over SHA-256(csr), as the agent's
// node key is certified, and returns the TPMS_ATTEST and the
// TPMT_SIGNATURE.
func Certify(t testing.TB, tpm transport.TPM, object, signer tpm2.NamedHandle, csr []byte) (info, sig []byte) {
	t.Helper()
	sum := sha256.Sum256(csr)
	info, sig, err := agenttpm.Certify(tpm, object, signer, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return info, sig
}

// Named is a key's NamedHandle, from its handle and name (an AK's, a node
// key's).
func Named(handle tpm2.TPMHandle, name []byte) tpm2.NamedHandle {
	return tpm2.NamedHandle{Handle: handle, Name: tpm2.TPM2BName{Buffer: name}}
}
