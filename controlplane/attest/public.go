package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// ErrMalformed reports bytes that are not a well-formed TPM structure.
var ErrMalformed = errors.New("malformed TPM structure")

// maxStructure bounds what the parsers look at; every structure of the
// protocol fits in far less.
const maxStructure = 8 << 10

// unmarshal parses exactly one canonical T from b: no trailing bytes, and
// marshalling the result gives b back, so hashing b (for a name or a
// signature) hashes what was parsed.
func unmarshal[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte, what string) (t *T, err error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: %s: empty", ErrMalformed, what)
	}
	if len(b) > maxStructure {
		return nil, fmt.Errorf("%w: %s: %d bytes", ErrMalformed, what, len(b))
	}
	// The reflection-based codec reports some malformed unions by panicking.
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, r)
		}
	}()
	t, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	if !bytes.Equal(tpm2.Marshal(*t), b) {
		return nil, fmt.Errorf("%w: %s: trailing or non-canonical bytes", ErrMalformed, what)
	}
	return t, nil
}

// decode is unmarshal with a direct decoder tried first (wire.go): direct
// takes the structures it knows, unmarshal everything else.
func decode[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte, what string, direct func([]byte) (*T, bool)) (*T, error) {
	if len(b) > 0 && len(b) <= maxStructure {
		if t, ok := direct(b); ok {
			return t, nil
		}
	}
	return unmarshal[T, P](b, what)
}

// Fingerprint returns the machine identity of an EK: the lowercase hex
// SHA-256 of the PKIX DER encoding of its public key.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// publicKey converts and validates the key of a TPMT_PUBLIC: RSA 2048,
// 3072 or 4096 bits, or ECC on NIST P-256, P-384 or P-521 with the point on
// the curve.
func publicKey(pub *tpm2.TPMTPublic) (crypto.PublicKey, error) {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, fmt.Errorf("%w: RSA parameters: %v", ErrMalformed, err)
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return nil, fmt.Errorf("%w: RSA modulus: %v", ErrMalformed, err)
		}
		bits := int(parms.KeyBits)
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return nil, fmt.Errorf("RSA key of %d bits: want 2048, 3072 or 4096", bits)
		}
		if len(n.Buffer)*8 != bits || n.Buffer[0]&0x80 == 0 || n.Buffer[len(n.Buffer)-1]&1 == 0 {
			return nil, fmt.Errorf("%w: RSA modulus is not an odd %d-bit number", ErrMalformed, bits)
		}
		e := int(parms.Exponent)
		if e == 0 {
			e = 65537 // the TPM's default
		}
		if e < 3 || e&1 == 0 || e > 1<<31-1 {
			return nil, fmt.Errorf("%w: RSA exponent %d", ErrMalformed, parms.Exponent)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n.Buffer), E: e}, nil
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, fmt.Errorf("%w: ECC parameters: %v", ErrMalformed, err)
		}
		pt, err := pub.Unique.ECC()
		if err != nil {
			return nil, fmt.Errorf("%w: ECC point: %v", ErrMalformed, err)
		}
		var curve elliptic.Curve
		switch parms.CurveID {
		case tpm2.TPMECCNistP256:
			curve = elliptic.P256()
		case tpm2.TPMECCNistP384:
			curve = elliptic.P384()
		case tpm2.TPMECCNistP521:
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("ECC curve %v: want NIST P-256, P-384 or P-521", parms.CurveID)
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(pt.X.Buffer) > size || len(pt.Y.Buffer) > size {
			return nil, fmt.Errorf("%w: ECC coordinates longer than the curve", ErrMalformed)
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		copy(point[1+size-len(pt.X.Buffer):], pt.X.Buffer)
		copy(point[1+2*size-len(pt.Y.Buffer):], pt.Y.Buffer)
		key, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, fmt.Errorf("%w: ECC point: %v", ErrMalformed, err)
		}
		return key, nil
	default:
		return nil, fmt.Errorf("key type %v: want RSA or ECC", pub.Type)
	}
}

// ParseEKPublic parses an EK's TPMT_PUBLIC (the tpm2.Marshal encoding, no
// size prefix) and returns its public key, *rsa.PublicKey or
// *ecdsa.PublicKey. The key must be a restricted decryption key with a
// symmetric algorithm, like every EK template; anything else could not
// receive a credential.
func ParseEKPublic(tpmtPublic []byte) (crypto.PublicKey, error) {
	ek, err := ParseEK(tpmtPublic)
	if err != nil {
		return nil, err
	}
	return ek.Key, nil
}

// EK is an endorsement key that passed ParseEK: what ParseEKPublic
// checks, kept parsed so that a challenge for it needs no second parse.
type EK struct {
	// Key is *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
	pub *tpm2.TPMTPublic
}

// ParseEK is ParseEKPublic returning the parsed EK, for EK.NewChallenge.
func ParseEK(tpmtPublic []byte) (*EK, error) {
	pub, err := decode(tpmtPublic, "EK TPMT_PUBLIC", decodePublic)
	if err != nil {
		return nil, err
	}
	key, err := ekKey(pub)
	if err != nil {
		return nil, err
	}
	return &EK{Key: key, pub: pub}, nil
}

func ekKey(pub *tpm2.TPMTPublic) (crypto.PublicKey, error) {
	a := pub.ObjectAttributes
	var missing []string
	if !a.Restricted {
		missing = append(missing, "restricted")
	}
	if !a.Decrypt {
		missing = append(missing, "decrypt")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("EK lacks attribute %s", strings.Join(missing, ", "))
	}
	if a.SignEncrypt {
		return nil, errors.New("EK has attribute sign: an EK is a decryption key")
	}
	if _, err := nameHash(pub.NameAlg); err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	var sym *tpm2.TPMTSymDefObject
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		if p, err := pub.Parameters.RSADetail(); err == nil {
			sym = &p.Symmetric
		}
	case tpm2.TPMAlgECC:
		if p, err := pub.Parameters.ECCDetail(); err == nil {
			sym = &p.Symmetric
		}
	}
	if sym != nil {
		if err := checkEKSymmetric(sym); err != nil {
			return nil, err
		}
	}
	key, err := publicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	return key, nil
}

// checkEKSymmetric accepts what a TPM uses to protect a credential:
// AES-128, -192 or -256 in CFB mode.
func checkEKSymmetric(sym *tpm2.TPMTSymDefObject) error {
	if sym.Algorithm != tpm2.TPMAlgAES {
		return fmt.Errorf("EK symmetric algorithm %v: want AES", sym.Algorithm)
	}
	bits, err := sym.KeyBits.AES()
	if err != nil {
		return fmt.Errorf("%w: EK symmetric key size: %v", ErrMalformed, err)
	}
	if *bits != 128 && *bits != 192 && *bits != 256 {
		return fmt.Errorf("EK symmetric key of %d bits: want 128, 192 or 256", *bits)
	}
	mode, err := sym.Mode.AES()
	if err != nil {
		return fmt.Errorf("%w: EK symmetric mode: %v", ErrMalformed, err)
	}
	if *mode != tpm2.TPMAlgCFB {
		return fmt.Errorf("EK symmetric mode %v: want CFB", *mode)
	}
	return nil
}

func nameHash(alg tpm2.TPMAlgID) (crypto.Hash, error) {
	switch alg {
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, nil
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, nil
	case tpm2.TPMAlgSHA512:
		return crypto.SHA512, nil
	default:
		return 0, fmt.Errorf("name algorithm %v: want SHA-256, SHA-384 or SHA-512", alg)
	}
}

// AK is a parsed, checked attestation key.
type AK struct {
	// Key is the public key, *rsa.PublicKey or *ecdsa.PublicKey.
	Key crypto.PublicKey
	// Name is the TPM name, nameAlg || H_nameAlg(TPMT_PUBLIC), computed
	// here: the credential is bound to it.
	Name []byte

	scheme tpm2.TPMAlgID // ECDSA, RSASSA or RSAPSS
	hash   crypto.Hash   // of the scheme
}

// ParseAKPublic parses an AK's TPMT_PUBLIC (the tpm2.Marshal encoding, no
// size prefix), checks that it is a key the TPM would only use to sign what
// it generated itself (restricted, sign, fixedTPM, fixedParent,
// sensitiveDataOrigin, not decrypt, with a fixed signing scheme), and
// computes its name.
func ParseAKPublic(tpmtPublic []byte) (*AK, error) {
	pub, err := decode(tpmtPublic, "AK TPMT_PUBLIC", decodePublic)
	if err != nil {
		return nil, err
	}
	a := pub.ObjectAttributes
	var missing []string
	for _, c := range []struct {
		ok   bool
		name string
	}{
		{a.Restricted, "restricted"},
		{a.SignEncrypt, "sign"},
		{a.FixedTPM, "fixedTPM"},
		{a.FixedParent, "fixedParent"},
		{a.SensitiveDataOrigin, "sensitiveDataOrigin"},
	} {
		if !c.ok {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("AK lacks attribute %s", strings.Join(missing, ", "))
	}
	if a.Decrypt {
		return nil, errors.New("AK has attribute decrypt: an AK must be a signing-only key")
	}
	h, err := nameHash(pub.NameAlg)
	if err != nil {
		return nil, fmt.Errorf("AK: %w", err)
	}
	key, err := publicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("AK: %w", err)
	}
	scheme, hash, err := akScheme(pub)
	if err != nil {
		return nil, err
	}
	return &AK{Key: key, Name: tpmName(pub.NameAlg, h, tpmtPublic), scheme: scheme, hash: hash}, nil
}

// tpmName is the TPM name of an object: its name algorithm alg (hash h),
// then the hash of its TPMT_PUBLIC.
func tpmName(alg tpm2.TPMAlgID, h crypto.Hash, tpmtPublic []byte) []byte {
	name := make([]byte, 2, 2+h.Size())
	name[0], name[1] = byte(alg>>8), byte(alg)
	d := h.New()
	d.Write(tpmtPublic)
	return d.Sum(name)
}

// akScheme returns the AK's signing scheme, which a restricted signing key
// must fix: a quote is then signed only that way.
func akScheme(pub *tpm2.TPMTPublic) (tpm2.TPMAlgID, crypto.Hash, error) {
	var (
		scheme tpm2.TPMAlgID
		hashID tpm2.TPMAlgID
	)
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil {
			return 0, 0, fmt.Errorf("%w: AK RSA parameters: %v", ErrMalformed, err)
		}
		scheme = p.Scheme.Scheme
		switch scheme {
		case tpm2.TPMAlgRSASSA:
			d, err := p.Scheme.Details.RSASSA()
			if err != nil {
				return 0, 0, fmt.Errorf("%w: AK RSASSA scheme: %v", ErrMalformed, err)
			}
			hashID = d.HashAlg
		case tpm2.TPMAlgRSAPSS:
			d, err := p.Scheme.Details.RSAPSS()
			if err != nil {
				return 0, 0, fmt.Errorf("%w: AK RSAPSS scheme: %v", ErrMalformed, err)
			}
			hashID = d.HashAlg
		default:
			return 0, 0, fmt.Errorf("AK signing scheme %v: want RSASSA or RSAPSS", scheme)
		}
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil {
			return 0, 0, fmt.Errorf("%w: AK ECC parameters: %v", ErrMalformed, err)
		}
		scheme = p.Scheme.Scheme
		if scheme != tpm2.TPMAlgECDSA {
			return 0, 0, fmt.Errorf("AK signing scheme %v: want ECDSA", scheme)
		}
		d, err := p.Scheme.Details.ECDSA()
		if err != nil {
			return 0, 0, fmt.Errorf("%w: AK ECDSA scheme: %v", ErrMalformed, err)
		}
		hashID = d.HashAlg
	}
	h, err := nameHash(hashID)
	if err != nil {
		return 0, 0, fmt.Errorf("AK signing scheme hash: %w", err)
	}
	return scheme, h, nil
}
