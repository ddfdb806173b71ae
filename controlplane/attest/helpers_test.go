package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// A software stand-in for a TPM key, to build structures no real TPM would
// produce (wrong magic, other banks...) and check that each is refused.

type softKey struct {
	priv crypto.Signer
	pub  tpm2.TPMTPublic
}

func akAttributes() tpm2.TPMAObject {
	return tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true,
	}
}

// newEKKeys makes an RSA 2048 and an ECC P-256 key, for the two kinds of
// EK.
func newEKKeys(t testing.TB) (*rsa.PrivateKey, *ecdsa.PrivateKey) {
	t.Helper()
	rsaPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	eccPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return rsaPriv, eccPriv
}

func newSoftECCAK(t testing.TB) softKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return softECCAK(priv, akAttributes())
}

func softECCAK(priv *ecdsa.PrivateKey, attrs tpm2.TPMAObject) softKey {
	return softKey{priv: priv, pub: tpm2.TPMTPublic{
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
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: priv.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: priv.Y.FillBytes(make([]byte, 32))},
		}),
	}}
}

func newSoftRSAAK(t testing.TB) softKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return softKey{priv: priv, pub: tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: akAttributes(),
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{
				Scheme:  tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: priv.N.Bytes()}),
	}}
}

func (k softKey) public() []byte { return tpm2.Marshal(k.pub) }

// sign returns a TPMT_SIGNATURE over msg in the key's scheme.
func (k softKey) sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	switch priv := k.priv.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, priv, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       tpm2.TPMAlgSHA256,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()},
			}),
		})
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgRSASSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
				Hash: tpm2.TPMAlgSHA256,
				Sig:  tpm2.TPM2BPublicKeyRSA{Buffer: sig},
			}),
		})
	}
	t.Fatalf("unknown key %T", k.priv)
	return nil
}

// quoteSpec describes a TPMS_ATTEST the way a TPM would build a quote,
// or, of type TPM_ST_ATTEST_CERTIFY, a key's certification.
type quoteSpec struct {
	magic  tpm2.TPMGenerated
	typ    tpm2.TPMST
	nonce  []byte
	banks  []tpm2.TPMSPCRSelection
	digest []byte
	// name is the certified key's name (a name of zeros when nil).
	name []byte
}

func pcrSelect(pcrs ...int) []byte {
	sel := make([]byte, 3)
	for _, p := range pcrs {
		sel[p/8] |= 1 << (p % 8)
	}
	return sel
}

// goodQuote is a quote of pcrs over nonce with the right digest.
func goodQuote(nonce []byte, pcrs map[int][]byte) quoteSpec {
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	h := sha256.New()
	for _, i := range idx {
		h.Write(pcrs[i])
	}
	return quoteSpec{
		magic:  tpm2.TPMGeneratedValue,
		typ:    tpm2.TPMSTAttestQuote,
		nonce:  nonce,
		banks:  []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: pcrSelect(idx...)}},
		digest: h.Sum(nil),
	}
}

func (q quoteSpec) marshal() []byte {
	attested := tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: q.banks},
		PCRDigest: tpm2.TPM2BDigest{Buffer: q.digest},
	})
	if q.typ == tpm2.TPMSTAttestCertify {
		name := q.name
		if name == nil {
			name = append([]byte{0, 0x0b}, make([]byte, 32)...)
		}
		attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
			Name:          tpm2.TPM2BName{Buffer: name},
			QualifiedName: tpm2.TPM2BName{Buffer: append([]byte{0, 0x0b}, make([]byte, 32)...)},
		})
	}
	return tpm2.Marshal(tpm2.TPMSAttest{
		Magic:           q.magic,
		Type:            q.typ,
		QualifiedSigner: tpm2.TPM2BName{Buffer: append([]byte{0, 0x0b}, make([]byte, 32)...)},
		ExtraData:       tpm2.TPM2BData{Buffer: q.nonce},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: 1000, ResetCount: 1, Safe: true},
		FirmwareVersion: 0x2019,
		Attested:        attested,
	})
}

func testPCRs() map[int][]byte {
	m := map[int][]byte{}
	for _, i := range []int{0, 1, 7, 16} {
		v := make([]byte, 32)
		v[0], v[31] = byte(i), 0xaa
		m[i] = v
	}
	return m
}

// quotedPCRs are the PCRs the tests quote.
var quotedPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 16}
