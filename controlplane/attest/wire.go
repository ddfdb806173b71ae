package attest

import (
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"
)

// Direct decoders for the structures every enrollment carries: an RSA or
// ECC TPMT_PUBLIC (EK and AK), a quote's TPMS_ATTEST and its
// TPMT_SIGNATURE. go-tpm decodes by reflection and unmarshal re-encodes to
// prove the bytes canonical, which made parsing a tenth of the daemon's
// CPU in an enrollment storm. These decoders read the TPM 2.0 Part 2
// layouts field by field and must consume every byte, so what they accept
// is canonical by construction; they build the same go-tpm values the
// reflection decoder would. Anything they do not know (another key type or
// scheme, a reserved attribute bit, several PCR banks) is left to
// unmarshal, so they only ever decide faster, never differently:
// FuzzDirectDecoders holds them to that.

// wire reads big-endian TPM fields; a short read sets bad.
type wire struct {
	b   []byte
	bad bool
}

func (w *wire) next(n int) []byte {
	if w.bad || len(w.b) < n {
		w.bad = true
		return nil
	}
	v := w.b[:n:n]
	w.b = w.b[n:]
	return v
}

func (w *wire) u8() uint8 {
	if v := w.next(1); v != nil {
		return v[0]
	}
	return 0
}

func (w *wire) u16() uint16 {
	if v := w.next(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (w *wire) u32() uint32 {
	if v := w.next(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (w *wire) u64() uint64 {
	if v := w.next(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// sized reads a TPM2B: a 16-bit size, then that many bytes.
func (w *wire) sized() []byte {
	return w.next(int(w.u16()))
}

// done reports whether every read succeeded and nothing is left.
func (w *wire) done() bool { return !w.bad && len(w.b) == 0 }

// objectAttributes decodes TPMA_OBJECT; ok is false when a bit go-tpm
// keeps in a reserved field is set.
func objectAttributes(v uint32) (a tpm2.TPMAObject, ok bool) {
	const known = 1<<1 | 1<<2 | 1<<4 | 1<<5 | 1<<6 | 1<<7 | 1<<8 | 1<<10 | 1<<11 | 1<<16 | 1<<17 | 1<<18 | 1<<19
	if v&^known != 0 {
		return a, false
	}
	bit := func(n uint) bool { return v&(1<<n) != 0 }
	return tpm2.TPMAObject{
		FixedTPM:             bit(1),
		STClear:              bit(2),
		FixedParent:          bit(4),
		SensitiveDataOrigin:  bit(5),
		UserWithAuth:         bit(6),
		AdminWithPolicy:      bit(7),
		FirmwareLimited:      bit(8),
		NoDA:                 bit(10),
		EncryptedDuplication: bit(11),
		Restricted:           bit(16),
		Decrypt:              bit(17),
		SignEncrypt:          bit(18),
		X509Sign:             bit(19),
	}, true
}

// symDefObject decodes a TPMT_SYM_DEF_OBJECT that is NULL or AES.
func symDefObject(w *wire) (tpm2.TPMTSymDefObject, bool) {
	alg := tpm2.TPMAlgID(w.u16())
	switch alg {
	case tpm2.TPMAlgNull:
		return tpm2.TPMTSymDefObject{Algorithm: alg}, true
	case tpm2.TPMAlgAES:
		bits, mode := tpm2.TPMKeyBits(w.u16()), tpm2.TPMAlgID(w.u16())
		return tpm2.TPMTSymDefObject{
			Algorithm: alg,
			KeyBits:   tpm2.NewTPMUSymKeyBits(alg, bits),
			Mode:      tpm2.NewTPMUSymMode(alg, mode),
		}, true
	}
	return tpm2.TPMTSymDefObject{}, false
}

// decodePublic decodes an RSA or ECC TPMT_PUBLIC; ok is false when b is
// anything else, for unmarshal to decide.
func decodePublic(b []byte) (pub *tpm2.TPMTPublic, ok bool) {
	w := &wire{b: b}
	pub = &tpm2.TPMTPublic{Type: tpm2.TPMAlgID(w.u16()), NameAlg: tpm2.TPMAlgID(w.u16())}
	if pub.ObjectAttributes, ok = objectAttributes(w.u32()); !ok {
		return nil, false
	}
	pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: w.sized()}
	sym, ok := symDefObject(w)
	if !ok {
		return nil, false
	}
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		p := &tpm2.TPMSRSAParms{Symmetric: sym, Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgID(w.u16())}}
		switch s := p.Scheme.Scheme; s {
		case tpm2.TPMAlgNull:
		case tpm2.TPMAlgRSASSA:
			p.Scheme.Details = tpm2.NewTPMUAsymScheme(s, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgID(w.u16())})
		case tpm2.TPMAlgRSAPSS:
			p.Scheme.Details = tpm2.NewTPMUAsymScheme(s, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgID(w.u16())})
		default:
			return nil, false
		}
		p.KeyBits, p.Exponent = tpm2.TPMKeyBits(w.u16()), w.u32()
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, p)
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: w.sized()})
	case tpm2.TPMAlgECC:
		p := &tpm2.TPMSECCParms{Symmetric: sym, Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgID(w.u16())}}
		switch s := p.Scheme.Scheme; s {
		case tpm2.TPMAlgNull:
		case tpm2.TPMAlgECDSA:
			p.Scheme.Details = tpm2.NewTPMUAsymScheme(s, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgID(w.u16())})
		default:
			return nil, false
		}
		p.CurveID = tpm2.TPMECCCurve(w.u16())
		if p.KDF.Scheme = tpm2.TPMAlgID(w.u16()); p.KDF.Scheme != tpm2.TPMAlgNull {
			return nil, false
		}
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, p)
		x, y := w.sized(), w.sized()
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x},
			Y: tpm2.TPM2BECCParameter{Buffer: y},
		})
	default:
		return nil, false
	}
	if !w.done() {
		return nil, false
	}
	return pub, true
}

// decodeQuote decodes a TPMS_ATTEST that is a TPM-generated quote over
// one PCR bank.
func decodeQuote(b []byte) (*tpm2.TPMSAttest, bool) {
	w := &wire{b: b}
	a := &tpm2.TPMSAttest{Magic: tpm2.TPMGenerated(w.u32()), Type: tpm2.TPMST(w.u16())}
	if a.Magic != tpm2.TPMGeneratedValue || a.Type != tpm2.TPMSTAttestQuote {
		return nil, false
	}
	a.QualifiedSigner = tpm2.TPM2BName{Buffer: w.sized()}
	a.ExtraData = tpm2.TPM2BData{Buffer: w.sized()}
	a.ClockInfo = tpm2.TPMSClockInfo{Clock: w.u64(), ResetCount: w.u32(), RestartCount: w.u32()}
	switch safe := w.u8(); safe {
	case 0, 1:
		a.ClockInfo.Safe = safe == 1
	default:
		return nil, false
	}
	a.FirmwareVersion = w.u64()
	if w.u32() != 1 {
		return nil, false
	}
	sel := tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgID(w.u16())}
	sel.PCRSelect = w.next(int(w.u8()))
	a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{sel}},
		PCRDigest: tpm2.TPM2BDigest{Buffer: w.sized()},
	})
	if !w.done() {
		return nil, false
	}
	return a, true
}

// decodeSignature decodes an ECDSA, RSASSA or RSAPSS TPMT_SIGNATURE.
func decodeSignature(b []byte) (*tpm2.TPMTSignature, bool) {
	w := &wire{b: b}
	sig := &tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgID(w.u16())}
	switch sig.SigAlg {
	case tpm2.TPMAlgECDSA:
		h := tpm2.TPMAlgID(w.u16())
		r, s := w.sized(), w.sized()
		sig.Signature = tpm2.NewTPMUSignature(sig.SigAlg, &tpm2.TPMSSignatureECC{
			Hash:       h,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: r},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: s},
		})
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		h := tpm2.TPMAlgID(w.u16())
		sig.Signature = tpm2.NewTPMUSignature(sig.SigAlg, &tpm2.TPMSSignatureRSA{
			Hash: h,
			Sig:  tpm2.TPM2BPublicKeyRSA{Buffer: w.sized()},
		})
	default:
		return nil, false
	}
	if !w.done() {
		return nil, false
	}
	return sig, true
}
