package bench

// softTPM emulates, in Go crypto, the little of a TPM that enrollment
// uses: an EK that activates credentials, RSA 2048 or ECC P-256 (the TCG
// templates, the two EKs TPMs ship), and an ECDSA P-256 AK that signs
// quotes, with every PCR zero. It is a load
// generator for the enrollment benchmark, not a TPM: its keys live in
// memory, so it proves nothing, and the product never uses it. The daemon
// cannot tell it from a TPM, which is what makes it a fair load.

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/attestation/attestation/controlplane/attest"
	"github.com/attestation/attestation/controlplane/bench/internal/ekrsa"
)

type softTPM struct {
	ek       ekSeeder
	ekPublic []byte // TPMT_PUBLIC
	ak       *ecdsa.PrivateKey
	akPublic []byte // TPMT_PUBLIC
	akName   []byte
	// fingerprint is the EK's identity: SHA-256 of its PKIX DER.
	fingerprint string
}

// ekSeeder recovers the seed of a credential made for the EK from its
// encrypted secret (TPM 2.0 Part 1, "Secret Sharing").
type ekSeeder interface {
	seed(encSecret []byte) ([]byte, error)
}

// rsaEK: the seed is RSA-OAEP encrypted to the EK.
type rsaEK struct{ key *ekrsa.Key }

func (e rsaEK) seed(encSecret []byte) ([]byte, error) { return e.key.DecryptOAEP(encSecret) }

// eccEK: the encrypted secret is an ephemeral public point (a
// TPMS_ECC_POINT), and the seed is KDFe over its ECDH with the EK.
type eccEK struct {
	key *ecdh.PrivateKey
	x   []byte // the EK's X coordinate
}

func (e eccEK) seed(encSecret []byte) ([]byte, error) {
	x, rest, ok := cut2B(encSecret)
	y, rest, ok2 := cut2B(rest)
	if !ok || !ok2 || len(rest) != 0 || len(x) > 32 || len(y) > 32 {
		return nil, errors.New("encrypted secret is not a P-256 TPMS_ECC_POINT")
	}
	point := make([]byte, 65)
	point[0] = 4 // uncompressed
	copy(point[33-len(x):33], x)
	copy(point[65-len(y):], y)
	eph, err := ecdh.P256().NewPublicKey(point)
	if err != nil {
		return nil, err
	}
	z, err := e.key.ECDH(eph)
	if err != nil {
		return nil, err
	}
	return tpm2.KDFe(crypto.SHA256, z, "IDENTITY", x, e.x, 256), nil
}

// cut2B splits a TPM2B off the front of b.
func cut2B(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
		return nil, nil, false
	}
	n := 2 + int(binary.BigEndian.Uint16(b))
	return b[2:n], b[n:], true
}

// newSoftTPM makes a software TPM with ek, an *rsa.PrivateKey (2048) or an
// *ecdh.PrivateKey (P-256), and a fresh AK.
func newSoftTPM(ek crypto.PrivateKey) (*softTPM, error) {
	var (
		ekPub    tpm2.TPMTPublic
		ekPKIX   any
		activate ekSeeder
	)
	switch k := ek.(type) {
	case *rsa.PrivateKey:
		ekPub = tpm2.RSAEKTemplate
		ekPub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		key, err := ekrsa.Load(k, []byte("IDENTITY\x00"))
		if err != nil {
			return nil, err
		}
		ekPKIX, activate = &k.PublicKey, rsaEK{key}
	case *ecdh.PrivateKey:
		point := k.PublicKey().Bytes() // 0x04 || X || Y
		ekPub = tpm2.ECCEKTemplate
		ekPub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: point[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: point[33:]},
		})
		ekPKIX, activate = k.PublicKey(), eccEK{key: k, x: point[1:33]}
	default:
		return nil, fmt.Errorf("soft TPM: EK of type %T", ek)
	}
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	akPub := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true,
		},
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
			X: tpm2.TPM2BECCParameter{Buffer: ak.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: ak.Y.FillBytes(make([]byte, 32))},
		}),
	}
	akRaw := tpm2.Marshal(akPub)
	sum := sha256.Sum256(akRaw)
	der, err := x509.MarshalPKIXPublicKey(ekPKIX)
	if err != nil {
		return nil, err
	}
	fp := sha256.Sum256(der)
	return &softTPM{
		ek:          activate,
		ekPublic:    tpm2.Marshal(ekPub),
		ak:          ak,
		akPublic:    akRaw,
		akName:      append([]byte{0x00, 0x0b}, sum[:]...), // TPM_ALG_SHA256 || H(public)
		fingerprint: hex.EncodeToString(fp[:]),
	}, nil
}

// activateCredential is TPM2_ActivateCredential (TPM 2.0 Part 1,
// "Credential Protection"): recover the seed with the EK, check the
// integrity HMAC over the credential and the AK name, decrypt the secret.
func (s *softTPM) activateCredential(blob, encSecret []byte) ([]byte, error) {
	seed, err := s.ek.seed(encSecret)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	if len(blob) < 2 {
		return nil, errors.New("activate credential: short blob")
	}
	n := int(binary.BigEndian.Uint16(blob))
	if len(blob) < 2+n {
		return nil, errors.New("activate credential: short blob")
	}
	integrity, encIdentity := blob[2:2+n], blob[2+n:]
	mac := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, 256))
	mac.Write(encIdentity)
	mac.Write(s.akName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, errors.New("activate credential: integrity check failed (not for this EK and AK)")
	}
	block, err := aes.NewCipher(tpm2.KDFa(crypto.SHA256, seed, "STORAGE", s.akName, nil, 128))
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(encIdentity))
	cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())).XORKeyStream(plain, encIdentity)
	if len(plain) < 2 || int(binary.BigEndian.Uint16(plain)) != len(plain)-2 {
		return nil, errors.New("activate credential: malformed credential")
	}
	return plain[2:], nil
}

// quote is TPM2_Quote over the SHA-256 bank with every PCR zero. The
// structures are written by hand (TPM 2.0 Part 2: TPMS_ATTEST with a
// TPMS_QUOTE_INFO, TPMT_SIGNATURE with ECDSA): go-tpm's reflection-driven
// Marshal would make the load generator slower than it needs to be.
func (s *softTPM) quote(nonce []byte, pcrs []uint32) (quote, sig []byte, values map[uint32][]byte, err error) {
	values = make(map[uint32][]byte, len(pcrs))
	h := sha256.New()
	var sel [3]byte          // PCRs 0-23, as PC Client TPMs select them
	for _, p := range pcrs { // ascending, as the daemon sends them
		if p >= 24 {
			return nil, nil, nil, fmt.Errorf("quote: PCR %d out of range", p)
		}
		values[p] = make([]byte, 32)
		h.Write(values[p])
		sel[p/8] |= 1 << (p % 8)
	}
	b := make([]byte, 0, 160)
	b = binary.BigEndian.AppendUint32(b, uint32(tpm2.TPMGeneratedValue))
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMSTAttestQuote))
	b = append2B(b, s.akName)
	b = append2B(b, nonce)
	b = binary.BigEndian.AppendUint64(b, 0) // clockInfo.clock
	b = binary.BigEndian.AppendUint32(b, 0) // resetCount
	b = binary.BigEndian.AppendUint32(b, 0) // restartCount
	b = append(b, 1)                        // safe
	b = binary.BigEndian.AppendUint64(b, 0) // firmwareVersion
	b = binary.BigEndian.AppendUint32(b, 1) // one TPMS_PCR_SELECTION
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA256))
	b = append(b, byte(len(sel)))
	b = append(b, sel[:]...)
	quote = append2B(b, h.Sum(nil))
	digest := sha256.Sum256(quote)
	r, ss, err := ecdsa.Sign(rand.Reader, s.ak, digest[:])
	if err != nil {
		return nil, nil, nil, err
	}
	sig = binary.BigEndian.AppendUint16(make([]byte, 0, 72), uint16(tpm2.TPMAlgECDSA))
	sig = binary.BigEndian.AppendUint16(sig, uint16(tpm2.TPMAlgSHA256))
	sig = append2B(sig, r.Bytes())
	sig = append2B(sig, ss.Bytes())
	return quote, sig, values, nil
}

// append2B appends a TPM2B: a 16-bit size, then the bytes.
func append2B(b, v []byte) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(v))), v...)
}

// ekKeys returns n RSA 2048 EK private keys. Making one takes about 0.1 s
// of CPU, so they are kept in the user's cache directory and reused by the
// next run, which makes only those it lacks (a file a batch,
// ek-rsa2048-FROM-TO.pem, all of them read).
func ekKeys(n int) ([]*rsa.PrivateKey, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "attestation-bench")
	files, _ := filepath.Glob(filepath.Join(dir, "ek-rsa2048-*.pem"))
	var (
		keys []*rsa.PrivateKey
		seen = map[string]bool{}
	)
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for len(keys) < n {
			var block *pem.Block
			if block, b = pem.Decode(b); block == nil {
				break
			}
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if !seen[string(block.Bytes)] {
				seen[string(block.Bytes)] = true
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == n {
		return keys, nil
	}
	have := len(keys)
	keys = append(keys, make([]*rsa.PrivateKey, n-have)...)
	var (
		wg   sync.WaitGroup
		next = make(chan int)
		errs = make(chan error, n)
	)
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := range next {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					errs <- err
					continue
				}
				keys[i] = k
			}
		})
	}
	for i := have; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for _, k := range keys[have:] {
		pem.Encode(&buf, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	}
	if err := os.MkdirAll(dir, 0o700); err == nil {
		// A cache: failing to write it only costs time.
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("ek-rsa2048-%d-%d.pem", have, n)), buf.Bytes(), 0o600)
	}
	return keys, nil
}

// eccEKKeys returns n ECC P-256 EK private keys.
func eccEKKeys(n int) ([]*ecdh.PrivateKey, error) {
	keys := make([]*ecdh.PrivateKey, n)
	for i := range keys {
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

// TestSoftTPMActivateCredential checks both kinds of soft EK against the
// daemon's own credentials (attest.NewChallenge, go-tpm's
// CreateCredential): the secret comes back for the AK the credential names
// and not for another.
func TestSoftTPMActivateCredential(t *testing.T) {
	rsaKeys, err := ekKeys(1)
	if err != nil {
		t.Fatal(err)
	}
	eccKeys, err := eccEKKeys(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ek   crypto.PrivateKey
	}{{"rsa-2048", rsaKeys[0]}, {"ecc-p256", eccKeys[0]}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSoftTPM(tc.ek)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := attest.NewChallenge(s.ekPublic, s.akName)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.activateCredential(ch.CredentialBlob, ch.EncryptedSecret)
			if err != nil || !bytes.Equal(got, ch.Secret) {
				t.Fatalf("activateCredential = %x, %v; want the secret %x", got, err, ch.Secret)
			}
			other := bytes.Clone(s.akName)
			other[len(other)-1] ^= 1
			ch, err = attest.NewChallenge(s.ekPublic, other)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := s.activateCredential(ch.CredentialBlob, ch.EncryptedSecret); err == nil {
				t.Fatalf("activated a credential bound to another AK: %x", got)
			}
		})
	}
}

// TestSoftTPMQuote checks the hand-written quote against go-tpm: the
// structure it unmarshals to, and the signature over it.
func TestSoftTPMQuote(t *testing.T) {
	keys, err := ekKeys(1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSoftTPM(keys[0])
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("0123456789abcdef0123456789abcdef")
	quote, sig, values, err := s.quote(nonce, []uint32{0, 1, 2, 3, 4, 5, 6, 7, 9})
	if err != nil {
		t.Fatal(err)
	}
	if len(values) != 9 {
		t.Fatalf("%d PCR values, want 9", len(values))
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](quote)
	if err != nil {
		t.Fatal(err)
	}
	info, err := a.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	want := tpm2.Marshal(tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: s.akName},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo:       tpm2.TPMSClockInfo{Safe: true},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash:      tpm2.TPMAlgSHA256,
				PCRSelect: tpm2.PCClientCompatible.PCRs(0, 1, 2, 3, 4, 5, 6, 7, 9),
			}}},
			PCRDigest: info.PCRDigest,
		}),
	})
	if !bytes.Equal(quote, want) {
		t.Fatalf("quote\n%x\nwant (go-tpm)\n%x", quote, want)
	}
	ts, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
	if err != nil {
		t.Fatal(err)
	}
	ecc, err := ts.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(quote)
	r, ss := new(big.Int).SetBytes(ecc.SignatureR.Buffer), new(big.Int).SetBytes(ecc.SignatureS.Buffer)
	if ecc.Hash != tpm2.TPMAlgSHA256 || !ecdsa.Verify(&s.ak.PublicKey, digest[:], r, ss) {
		t.Fatal("the quote's signature does not verify")
	}
}
