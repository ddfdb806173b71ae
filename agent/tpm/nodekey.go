package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// nodeKeyLabel is the node key template's unique field: it makes the node
// key a primary of its own, apart from another program's primary with the
// same attributes.
var nodeKeyLabel = []byte("attestation node key")

// nodeKeyTemplate is the node key: ECDSA P-256 with SHA-256, a signing
// key that is not restricted (it signs digests from outside the TPM: a
// CSR, a TLS handshake) and that the TPM will not export (fixedTPM,
// fixedParent) or take from outside (sensitiveDataOrigin).
var nodeKeyTemplate = eccSigningTemplate(tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	SignEncrypt:         true,
}, nodeKeyLabel)

// NodeKey is the machine's node key, the key of its node certificate: a
// primary key in the owner hierarchy, so the TPM derives the same key
// from the template on every boot and nothing is stored (a TPM2_Clear
// changes the owner seed, and with it the key: the next certificate is
// issued to the new one). Its private part never leaves the TPM: Sign
// runs TPM2_Sign. It is a crypto.Signer, for a CSR and for TLS.
//
// The owner hierarchy is expected to have an empty authorization, as on
// a machine nobody took ownership of; otherwise the key cannot be made.
type NodeKey struct {
	a *Attester
	// public is the TPMT_PUBLIC (tpm2.Marshal encoding, no size prefix).
	public []byte
	key    *ecdsa.PublicKey
	h      loaded
}

// NodeKey returns the node key, creating it in the TPM on first use. It is
// flushed by Close.
func (a *Attester) NodeKey() (*NodeKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errors.New("node key: attester is closed")
	}
	if a.node != nil {
		return a.node, nil
	}
	k, err := createNodeKey(a.tpm)
	if err != nil {
		return nil, err
	}
	k.a = a
	a.node = k
	return k, nil
}

func createNodeKey(t transport.TPM) (*NodeKey, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(nodeKeyTemplate),
	}.Execute(t)
	if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
		return nil, fmt.Errorf("create node key: %w (the owner hierarchy has an authorization; the node key needs an empty one)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("create node key: %w", err)
	}
	l := loaded{handle: rsp.ObjectHandle, name: rsp.Name, transient: true}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush(t, l)
		return nil, fmt.Errorf("create node key: %w", err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		flush(t, l)
		return nil, fmt.Errorf("create node key: %w", err)
	}
	ecKey, ok := key.(*ecdsa.PublicKey)
	if !ok {
		flush(t, l)
		return nil, fmt.Errorf("create node key: the TPM made a %T key, not ECDSA", key)
	}
	return &NodeKey{public: bytes.Clone(rsp.OutPublic.Bytes()), key: ecKey, h: l}, nil
}

// Public returns the public key, an *ecdsa.PublicKey.
func (k *NodeKey) Public() crypto.PublicKey { return k.key }

// PublicArea returns the key's TPMT_PUBLIC (tpm2.Marshal encoding, no size
// prefix): what IssueCertificateRequest.key_public carries.
func (k *NodeKey) PublicArea() []byte { return bytes.Clone(k.public) }

// Name returns the key's TPM name, nameAlg || H(PublicArea()).
func (k *NodeKey) Name() []byte { return bytes.Clone(k.h.name.Buffer) }

// Handle is the key's transient handle while the Attester is open.
func (k *NodeKey) Handle() tpm2.TPMHandle { return k.h.handle }

// Sign signs a SHA-256 digest with the key in the TPM and returns the
// ASN.1 DER ECDSA signature, as crypto.Signer says. The key's scheme is
// fixed to SHA-256: any other hash is refused.
func (k *NodeKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, fmt.Errorf("node key: sign: want a SHA-256 digest, got %v (%d bytes)", opts.HashFunc(), len(digest))
	}
	k.a.mu.Lock()
	defer k.a.mu.Unlock()
	if k.a.closed {
		return nil, errors.New("node key: sign: attester is closed")
	}
	sig, err := SignECDSA(k.a.tpm, k.h.named(), digest)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	return sig, nil
}

// SignECDSA signs a SHA-256 digest with key, an ECC signing key loaded in
// the TPM whose scheme is ECDSA with SHA-256 or not fixed, and returns the
// ASN.1 DER signature.
func SignECDSA(t transport.TPM, key tpm2.NamedHandle, digest []byte) ([]byte, error) {
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: key.Handle, Name: key.Name, Auth: tpm2.PasswordAuth(nil)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
}

// Certify has the AK certify the key (TPM2_Certify): the TPM signs, with
// the AK, that it holds a key of this name, with qualifyingData in the
// structure. certifyInfo is the TPMS_ATTEST (the contents of the
// TPM2B_ATTEST), signature the TPMT_SIGNATURE (tpm2.Marshal encoding).
func (k *NodeKey) Certify(qualifyingData []byte) (certifyInfo, signature []byte, err error) {
	k.a.mu.Lock()
	defer k.a.mu.Unlock()
	if k.a.closed {
		return nil, nil, errors.New("certify node key: attester is closed")
	}
	certifyInfo, signature, err = Certify(k.a.tpm, k.h.named(), k.a.akH.named(), qualifyingData)
	if err != nil {
		return nil, nil, fmt.Errorf("node key: %w", err)
	}
	return certifyInfo, signature, nil
}

// Certify runs TPM2_Certify: signer, a signing key with a fixed scheme
// (an AK), certifies object, a key loaded in the TPM, with qualifyingData
// in the TPMS_ATTEST. Both keys are authorized with an empty password.
func Certify(t transport.TPM, object, signer tpm2.NamedHandle, qualifyingData []byte) (certifyInfo, signature []byte, err error) {
	rsp, err := tpm2.Certify{
		ObjectHandle:   tpm2.AuthHandle{Handle: object.Handle, Name: object.Name, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:     tpm2.AuthHandle{Handle: signer.Handle, Name: signer.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(t)
	if err != nil {
		return nil, nil, fmt.Errorf("certify: %w", err)
	}
	return bytes.Clone(rsp.CertifyInfo.Bytes()), tpm2.Marshal(rsp.Signature), nil
}

// CertificateRequest is what the control plane's IssueCertificate takes:
// a CSR signed by the node key, the key's public area, and the AK's
// certification of the key over SHA-256(CSR), which binds the
// certification to this one CSR.
type CertificateRequest struct {
	// CSR is the PKCS #10 request, DER.
	CSR []byte
	// KeyPublic is the node key's TPMT_PUBLIC.
	KeyPublic []byte
	// CertifyInfo and CertifySignature are Certify's results.
	CertifyInfo      []byte
	CertifySignature []byte
}

// CertificateRequest makes a CSR for the key with commonName as its
// subject (the control plane decides what the certificate says) and has
// the AK certify the key with the CSR's SHA-256 as qualifying data. Each
// call certifies the key anew.
func (k *NodeKey) CertificateRequest(commonName string) (*CertificateRequest, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, k)
	if err != nil {
		return nil, fmt.Errorf("node key: certificate request: %w", err)
	}
	sum := sha256.Sum256(csr)
	info, sig, err := k.Certify(sum[:])
	if err != nil {
		return nil, err
	}
	return &CertificateRequest{CSR: csr, KeyPublic: k.PublicArea(), CertifyInfo: info, CertifySignature: sig}, nil
}
