package tpm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// KeyType is the algorithm of an EK or AK.
type KeyType string

const (
	// RSA is RSA 2048: the TCG EK template L-1, or an RSASSA-SHA256 AK.
	RSA KeyType = "rsa"
	// ECC is NIST P-256: the TCG EK template L-2, or an ECDSA-SHA256 AK.
	ECC KeyType = "ecc"
)

// Where the TCG EK Credential Profile and Provisioning Guidance put things.
const (
	ekHandleRSA tpm2.TPMHandle = 0x81010001
	ekHandleECC tpm2.TPMHandle = 0x81010002
	ekCertRSA   tpm2.TPMHandle = 0x01C00002
	ekCertECC   tpm2.TPMHandle = 0x01C0000A
)

// policyA is TPM2_PolicySecret(TPM_RH_ENDORSEMENT), the auth policy of the
// standard EK templates.
var policyA = tpm2.RSAEKTemplate.AuthPolicy.Buffer

// EK is the endorsement key.
type EK struct {
	Type KeyType
	// Public is the TPMT_PUBLIC structure (tpm2.Marshal encoding, no size
	// prefix): what RegisterRequest.ek_public carries.
	Public []byte
	// Key is the public key, *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
	// Fingerprint is the machine's identity: lowercase hex SHA-256 of the
	// PKIX DER of Key.
	Fingerprint string
	// Certificate is the DER EK certificate from NV, nil when the TPM has none.
	Certificate []byte
	// CertificateError is why a certificate index that exists could not be
	// read (Certificate is then nil). It does not stop attestation: the
	// control plane may accept the EK by allowlist.
	CertificateError error
	// Persistent reports that the EK was found at its persistent handle
	// rather than created from the template.
	Persistent bool
}

// AK is the attestation key: a restricted signing key.
type AK struct {
	Type KeyType
	// Public is the TPMT_PUBLIC structure (tpm2.Marshal encoding, no size
	// prefix): what RegisterRequest.ak_public carries.
	Public []byte
	// Key is the public key, *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
	// Name is nameAlg || H(Public), what a credential is bound to.
	Name []byte
	// Handle is the AK's transient handle while the Attester is open.
	Handle tpm2.TPMHandle
}

// Fingerprint returns the lowercase hex SHA-256 of the PKIX DER encoding of
// pub. The control plane computes the same value independently.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// loaded is a key the Attester holds in the TPM.
type loaded struct {
	handle    tpm2.TPMHandle
	name      tpm2.TPM2BName
	transient bool
}

func (l loaded) named() tpm2.NamedHandle { return tpm2.NamedHandle{Handle: l.handle, Name: l.name} }

// readEK finds the EK at its persistent handle or creates it from the
// standard template (which yields the same key on every call).
func readEK(t transport.TPM, typ KeyType) (EK, loaded, error) {
	var (
		template tpm2.TPMTPublic
		handles  []tpm2.TPMHandle
		wantAlg  tpm2.TPMAlgID
	)
	switch typ {
	case RSA:
		template, handles, wantAlg = tpm2.RSAEKTemplate, []tpm2.TPMHandle{ekHandleRSA}, tpm2.TPMAlgRSA
	case ECC:
		template, handles, wantAlg = tpm2.ECCEKTemplate, []tpm2.TPMHandle{ekHandleECC, ekHandleRSA}, tpm2.TPMAlgECC
	default:
		return EK{}, loaded{}, fmt.Errorf("read EK: unknown key type %q (want %q or %q)", typ, RSA, ECC)
	}

	for _, h := range handles {
		rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t)
		if errors.Is(err, tpm2.TPMRCHandle) {
			continue
		}
		if err != nil {
			return EK{}, loaded{}, fmt.Errorf("read EK at %#x: %w", uint32(h), err)
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return EK{}, loaded{}, fmt.Errorf("read EK at %#x: %w", uint32(h), err)
		}
		// Only a key that our policy session can authorize is usable for
		// ActivateCredential; anything else there is not a standard EK.
		if pub.Type != wantAlg || !isStandardEK(pub) {
			continue
		}
		ek, err := newEK(typ, pub, rsp.OutPublic.Bytes())
		if err != nil {
			return EK{}, loaded{}, err
		}
		ek.Persistent = true
		return ek, loaded{handle: h, name: rsp.Name}, nil
	}

	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(template),
	}.Execute(t)
	if err != nil {
		return EK{}, loaded{}, fmt.Errorf("create %s EK: %w", typ, err)
	}
	l := loaded{handle: rsp.ObjectHandle, name: rsp.Name, transient: true}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush(t, l)
		return EK{}, loaded{}, fmt.Errorf("create %s EK: %w", typ, err)
	}
	ek, err := newEK(typ, pub, rsp.OutPublic.Bytes())
	if err != nil {
		flush(t, l)
		return EK{}, loaded{}, err
	}
	return ek, l, nil
}

func isStandardEK(pub *tpm2.TPMTPublic) bool {
	a := pub.ObjectAttributes
	return pub.NameAlg == tpm2.TPMAlgSHA256 &&
		a.Restricted && a.Decrypt && !a.SignEncrypt && a.AdminWithPolicy && !a.UserWithAuth &&
		bytes.Equal(pub.AuthPolicy.Buffer, policyA)
}

func newEK(typ KeyType, pub *tpm2.TPMTPublic, raw []byte) (EK, error) {
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return EK{}, fmt.Errorf("read EK public key: %w", err)
	}
	fp, err := Fingerprint(key)
	if err != nil {
		return EK{}, fmt.Errorf("read EK public key: %w", err)
	}
	return EK{Type: typ, Public: bytes.Clone(raw), Key: key, Fingerprint: fp}, nil
}

// akTemplate is the AK: a restricted signing key with a fixed scheme, so a
// quote cannot be made with a weaker one.
func akTemplate(typ KeyType) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	switch typ {
	case ECC:
		return eccSigningTemplate(attrs, nil), nil
	case RSA:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	default:
		return tpm2.TPMTPublic{}, fmt.Errorf("AK: unknown key type %q (want %q or %q)", typ, RSA, ECC)
	}
}

// eccSigningTemplate is an ECC P-256 signing key with attrs and a fixed
// ECDSA SHA-256 scheme; label, the unique field, tells apart primaries
// of the same template.
func eccSigningTemplate(attrs tpm2.TPMAObject, label []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: label}}),
	}
}

// createAK derives the AK as a primary in the endorsement hierarchy: the
// same template gives the same key for as long as the endorsement seed
// lives, which is the life of the TPM.
func createAK(t transport.TPM, typ KeyType) (AK, loaded, error) {
	template, err := akTemplate(typ)
	if err != nil {
		return AK{}, loaded{}, err
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(template),
	}.Execute(t)
	if err != nil {
		return AK{}, loaded{}, fmt.Errorf("create %s AK: %w", typ, err)
	}
	l := loaded{handle: rsp.ObjectHandle, name: rsp.Name, transient: true}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush(t, l)
		return AK{}, loaded{}, fmt.Errorf("create %s AK: %w", typ, err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		flush(t, l)
		return AK{}, loaded{}, fmt.Errorf("create %s AK: %w", typ, err)
	}
	return AK{
		Type:   typ,
		Public: bytes.Clone(rsp.OutPublic.Bytes()),
		Key:    key,
		Name:   bytes.Clone(rsp.Name.Buffer),
		Handle: rsp.ObjectHandle,
	}, l, nil
}

// readEKCertificate reads the EK certificate from its NV index. An index
// that is not defined or not written means no certificate: nil, nil.
func readEKCertificate(t transport.TPM, typ KeyType) ([]byte, error) {
	index := ekCertRSA
	if typ == ECC {
		index = ekCertECC
	}
	data, err := readNV(t, index)
	if errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCNVUninitialized) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read EK certificate from NV %#x: %w", uint32(index), err)
	}
	// Some vendors pad the index: keep only the DER certificate.
	var raw asn1.RawValue
	if rest, err := asn1.Unmarshal(data, &raw); err == nil {
		data = data[:len(data)-len(rest)]
	}
	return data, nil
}

// nvChunk is the largest NV read every TPM accepts (the PC Client minimum
// of TPM_PT_NV_BUFFER_MAX); a TPM that reports less gets less.
const nvChunk = 1024

func readNV(t transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	pubRsp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(t)
	if err != nil {
		return nil, err
	}
	pub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	if !pub.Attributes.Written {
		return nil, tpm2.TPMRCNVUninitialized
	}
	nv := tpm2.NamedHandle{Handle: index, Name: pubRsp.NVName}
	var auth tpm2.AuthHandle
	switch {
	case pub.Attributes.AuthRead:
		auth = tpm2.AuthHandle{Handle: index, Name: pubRsp.NVName, Auth: tpm2.PasswordAuth(nil)}
	case pub.Attributes.OwnerRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	default:
		return nil, errors.New("index is readable neither with its own auth nor the owner's")
	}

	chunk := nvBufferMax(t)
	out := make([]byte, 0, pub.DataSize)
	for off := 0; off < int(pub.DataSize); off += chunk {
		n := min(chunk, int(pub.DataSize)-off)
		rsp, err := tpm2.NVRead{AuthHandle: auth, NVIndex: nv, Size: uint16(n), Offset: uint16(off)}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

func nvBufferMax(t transport.TPM) int {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(t)
	if err != nil {
		return nvChunk
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return nvChunk
	}
	if v := int(props.TPMProperty[0].Value); v > 0 && v < nvChunk {
		return v
	}
	return nvChunk
}

func flush(t transport.TPM, l loaded) error {
	if !l.transient || l.handle == 0 {
		return nil
	}
	if _, err := (tpm2.FlushContext{FlushHandle: l.handle}).Execute(t); err != nil {
		return fmt.Errorf("flush handle %#x: %w", uint32(l.handle), err)
	}
	return nil
}
