package attest

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// NodeKey is a key that VerifyNodeKey accepted: one the machine's TPM
// holds, cannot export and uses only to sign.
type NodeKey struct {
	// Key is the public key, *rsa.PublicKey or *ecdsa.PublicKey: the
	// CSR's, and that of the certified TPMT_PUBLIC.
	Key crypto.PublicKey
	// Name is the key's TPM name, computed here.
	Name []byte
	// CSR is the certificate request, its signature checked.
	CSR *x509.CertificateRequest
}

// CSRQualifyingData is the qualifying data of a node key's certification:
// the SHA-256 of the CSR's DER, so that a certification vouches for the
// key of that one CSR and cannot be replayed with another.
func CSRQualifyingData(csr []byte) []byte {
	sum := sha256.Sum256(csr)
	return sum[:]
}

// VerifyNodeKey checks a request for a node certificate, as the agent's
// NodeKey.CertificateRequest makes it, against the machine's attested AK:
//
//   - signature is a TPMT_SIGNATURE by the AK over certifyInfo, in the
//     AK's scheme and hash;
//   - certifyInfo is a TPMS_ATTEST with magic TPM_GENERATED_VALUE, type
//     TPM_ST_ATTEST_CERTIFY and, as qualifying data, CSRQualifyingData(csr);
//   - the name it certifies is the name of keyPublic (a TPMT_PUBLIC),
//     computed here;
//   - keyPublic is a key the TPM made (sensitiveDataOrigin), holds and
//     will not let go (fixedTPM, fixedParent), that signs (sign) and does
//     nothing else (neither decrypt nor restricted);
//   - csr is a PKCS #10 request (DER) whose signature verifies with its
//     key, and that key is keyPublic's.
//
// Errors wrapping ErrMalformed are input that does not parse; every other
// error names the check that failed.
func (ak *AK) VerifyNodeKey(keyPublic, certifyInfo, signature, csr []byte) (*NodeKey, error) {
	pub, err := decode(keyPublic, "key TPMT_PUBLIC", decodePublic)
	if err != nil {
		return nil, err
	}
	attest, err := unmarshal[tpm2.TPMSAttest](certifyInfo, "certify TPMS_ATTEST")
	if err != nil {
		return nil, err
	}
	if len(csr) == 0 {
		return nil, fmt.Errorf("%w: CSR: empty", ErrMalformed)
	}
	if err := verifySignature(ak, certifyInfo, signature); err != nil {
		if errors.Is(err, ErrMalformed) {
			return nil, err
		}
		return nil, fmt.Errorf("the certification is not signed by this machine's AK: %w", err)
	}
	if attest.Magic != tpm2.TPMGeneratedValue {
		return nil, fmt.Errorf("the certification's magic %#x is not TPM_GENERATED_VALUE: the TPM did not make it", uint32(attest.Magic))
	}
	if attest.Type != tpm2.TPMSTAttestCertify {
		return nil, fmt.Errorf("the attestation is of type %v, not a key certification (TPM_ST_ATTEST_CERTIFY)", attest.Type)
	}
	if subtle.ConstantTimeCompare(attest.ExtraData.Buffer, CSRQualifyingData(csr)) != 1 {
		return nil, errors.New("the certification is not for this CSR: its qualifying data is not the CSR's SHA-256")
	}
	info, err := attest.Attested.Certify()
	if err != nil {
		return nil, fmt.Errorf("%w: TPMS_CERTIFY_INFO: %v", ErrMalformed, err)
	}
	name, err := publicName(pub, keyPublic)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if subtle.ConstantTimeCompare(info.Name.Buffer, name) != 1 {
		return nil, fmt.Errorf("the certification is of another key than key_public (name %x, key_public's %x)", info.Name.Buffer, name)
	}
	if err := checkNodeKeyAttributes(pub.ObjectAttributes); err != nil {
		return nil, err
	}
	key, err := publicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, fmt.Errorf("%w: CSR: %v", ErrMalformed, err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the CSR's signature does not verify: %w", err)
	}
	if !publicKeysEqual(req.PublicKey, key) {
		return nil, errors.New("the CSR's key is not the certified key")
	}
	return &NodeKey{Key: key, Name: name, CSR: req}, nil
}

// Name returns the TPM name of an object from its TPMT_PUBLIC (the
// tpm2.Marshal encoding): its name algorithm, then the hash of the
// structure with it.
func Name(tpmtPublic []byte) ([]byte, error) {
	pub, err := decode(tpmtPublic, "TPMT_PUBLIC", decodePublic)
	if err != nil {
		return nil, err
	}
	return publicName(pub, tpmtPublic)
}

// publicName is the name of pub, parsed from raw.
func publicName(pub *tpm2.TPMTPublic, raw []byte) ([]byte, error) {
	h, err := nameHash(pub.NameAlg)
	if err != nil {
		return nil, err
	}
	return tpmName(pub.NameAlg, h, raw), nil
}

// checkNodeKeyAttributes says which attribute makes a certified key unfit
// to be a node key.
func checkNodeKeyAttributes(a tpm2.TPMAObject) error {
	switch {
	case !a.FixedTPM:
		return errors.New("the key is exportable (fixedTPM not set)")
	case !a.FixedParent:
		return errors.New("the key is exportable (fixedParent not set)")
	case !a.SensitiveDataOrigin:
		return errors.New("the key was not made by the TPM (sensitiveDataOrigin not set): it may be known outside")
	case !a.SignEncrypt:
		return errors.New("the key cannot sign (sign not set)")
	case a.Decrypt:
		return errors.New("the key can decrypt (decrypt set): want a signing-only key")
	case a.Restricted:
		return errors.New("the key is restricted: it signs only what the TPM made, not a CSR or a TLS handshake")
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
