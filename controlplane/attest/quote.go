package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// MaxPCR is the highest PCR index a quote may cover.
const MaxPCR = 23

// VerifyQuote checks a quote made by the agent's Attester.Quote:
//
//   - akPublic is the AK's TPMT_PUBLIC, already bound to the EK by
//     credential activation; it must pass ParseAKPublic;
//   - signature is a TPMT_SIGNATURE by the AK over quote, in the AK's
//     scheme (ECDSA, RSASSA or RSAPSS) and hash;
//   - quote is a TPMS_ATTEST with magic TPM_GENERATED_VALUE, type
//     TPM_ST_ATTEST_QUOTE and extraData equal to nonce;
//   - its PCR selection is one SHA-256 bank selecting exactly the PCRs in
//     pcrValues (SHA-256 values, 32 bytes each);
//   - its PCR digest is the hash (of the AK's scheme) of the values
//     concatenated in ascending PCR order.
func VerifyQuote(akPublic, quote, signature, nonce []byte, pcrValues map[int][]byte) error {
	ak, err := ParseAKPublic(akPublic)
	if err != nil {
		return fmt.Errorf("verify quote: %w", err)
	}
	return ak.VerifyQuote(quote, signature, nonce, pcrValues)
}

// VerifyQuote is the package's VerifyQuote for an AK parsed already (by
// ParseAKPublic).
func (ak *AK) VerifyQuote(quote, signature, nonce []byte, pcrValues map[int][]byte) error {
	if err := verifySignature(ak, quote, signature); err != nil {
		return fmt.Errorf("verify quote: %w", err)
	}
	attest, err := decode(quote, "TPMS_ATTEST", decodeQuote)
	if err != nil {
		return fmt.Errorf("verify quote: %w", err)
	}
	if attest.Magic != tpm2.TPMGeneratedValue {
		return fmt.Errorf("verify quote: magic %#x is not TPM_GENERATED_VALUE", uint32(attest.Magic))
	}
	if attest.Type != tpm2.TPMSTAttestQuote {
		return fmt.Errorf("verify quote: attestation type %v is not a quote", attest.Type)
	}
	if len(nonce) == 0 || subtle.ConstantTimeCompare(attest.ExtraData.Buffer, nonce) != 1 {
		return errors.New("verify quote: the quote is not over this challenge's nonce")
	}
	info, err := attest.Attested.Quote()
	if err != nil {
		return fmt.Errorf("verify quote: %w: TPMS_QUOTE_INFO: %v", ErrMalformed, err)
	}
	selected, err := selectedPCRs(info.PCRSelect)
	if err != nil {
		return fmt.Errorf("verify quote: %w", err)
	}
	reported := make([]int, 0, len(pcrValues))
	for i, v := range pcrValues {
		if i < 0 || i > MaxPCR {
			return fmt.Errorf("verify quote: PCR %d out of range 0..%d", i, MaxPCR)
		}
		if len(v) != sha256.Size {
			return fmt.Errorf("verify quote: PCR %d value of %d bytes, want %d", i, len(v), sha256.Size)
		}
		reported = append(reported, i)
	}
	slices.Sort(reported)
	if !slices.Equal(selected, reported) {
		return fmt.Errorf("verify quote: the quote covers PCRs %v but values were reported for %v", selected, reported)
	}
	h := ak.hash.New()
	for _, i := range selected {
		h.Write(pcrValues[i])
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), info.PCRDigest.Buffer) != 1 {
		return errors.New("verify quote: the reported PCR values do not match the quoted digest")
	}
	return nil
}

// QuoteNonce returns the qualifying data of a quote (a TPMS_ATTEST): the
// nonce it claims to be over. It proves nothing: VerifyQuote does.
func QuoteNonce(quote []byte) ([]byte, error) {
	a, err := decode(quote, "TPMS_ATTEST", decodeQuote)
	if err != nil {
		return nil, err
	}
	return a.ExtraData.Buffer, nil
}

// selectedPCRs returns the indices of a selection of exactly one bank,
// SHA-256, in ascending order.
func selectedPCRs(sel tpm2.TPMLPCRSelection) ([]int, error) {
	if len(sel.PCRSelections) != 1 {
		return nil, fmt.Errorf("the quote selects %d PCR banks, want 1 (SHA-256)", len(sel.PCRSelections))
	}
	s := sel.PCRSelections[0]
	if s.Hash != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("the quote selects the %v bank, want SHA-256", s.Hash)
	}
	var pcrs []int
	for i, b := range s.PCRSelect {
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				pcrs = append(pcrs, i*8+bit)
			}
		}
	}
	if len(pcrs) == 0 {
		return nil, errors.New("the quote selects no PCR")
	}
	if last := pcrs[len(pcrs)-1]; last > MaxPCR {
		return nil, fmt.Errorf("the quote selects PCR %d, beyond %d", last, MaxPCR)
	}
	return pcrs, nil
}

// verifySignature checks a TPMT_SIGNATURE by the AK over msg.
func verifySignature(ak *AK, msg, signature []byte) error {
	sig, err := decode(signature, "TPMT_SIGNATURE", decodeSignature)
	if err != nil {
		return err
	}
	if sig.SigAlg != ak.scheme {
		return fmt.Errorf("signature algorithm %v, but the AK signs with %v", sig.SigAlg, ak.scheme)
	}
	var sigHash tpm2.TPMAlgID
	switch sig.SigAlg {
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return fmt.Errorf("%w: ECDSA signature: %v", ErrMalformed, err)
		}
		sigHash = s.Hash
		if err := checkHash(sigHash, ak.hash); err != nil {
			return err
		}
		key, ok := ak.Key.(*ecdsa.PublicKey)
		if !ok {
			return errors.New("ECDSA signature from a non-ECC AK")
		}
		d := digest(ak.hash, msg)
		r, ss := new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(key, d, r, ss) {
			return errors.New("bad ECDSA signature by the AK")
		}
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var s *tpm2.TPMSSignatureRSA
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return fmt.Errorf("%w: RSA signature: %v", ErrMalformed, err)
		}
		if err := checkHash(s.Hash, ak.hash); err != nil {
			return err
		}
		key, ok := ak.Key.(*rsa.PublicKey)
		if !ok {
			return errors.New("RSA signature from a non-RSA AK")
		}
		d := digest(ak.hash, msg)
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(key, ak.hash, d, s.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(key, ak.hash, d, s.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: ak.hash})
		}
		if err != nil {
			return fmt.Errorf("bad RSA signature by the AK: %w", err)
		}
	default:
		return fmt.Errorf("signature algorithm %v: want ECDSA, RSASSA or RSAPSS", sig.SigAlg)
	}
	return nil
}

func checkHash(got tpm2.TPMAlgID, want crypto.Hash) error {
	h, err := nameHash(got)
	if err != nil || h != want {
		return fmt.Errorf("signature hash %v, but the AK signs with %v", got, want)
	}
	return nil
}

func digest(h crypto.Hash, msg []byte) []byte {
	d := h.New()
	d.Write(msg)
	return d.Sum(nil)
}

// ComparePCRs checks quoted PCR values (as VerifyQuote accepted them)
// against expected ones. Every expected PCR must be present with the same
// value; PCRs not in expected are not compared. The error names the
// differing PCR indices.
func ComparePCRs(expected, got map[int][]byte) error {
	var differ []int
	for i, want := range expected {
		if g, ok := got[i]; !ok || subtle.ConstantTimeCompare(g, want) != 1 {
			differ = append(differ, i)
		}
	}
	if len(differ) == 0 {
		return nil
	}
	slices.Sort(differ)
	s := make([]string, len(differ))
	for i, p := range differ {
		s[i] = strconv.Itoa(p)
	}
	return fmt.Errorf("PCR values differ from the expected ones at PCR %s", strings.Join(s, ", "))
}
