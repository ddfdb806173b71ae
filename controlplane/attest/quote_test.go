package attest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestVerifyQuoteSoftware(t *testing.T) {
	ecc, rsaKey, other := newSoftECCAK(t), newSoftRSAAK(t), newSoftECCAK(t)
	nonce := []byte("0123456789abcdef0123456789abcdef")
	pcrs := testPCRs()

	type input struct {
		ak, quote, sig, nonce []byte
		pcrs                  map[int][]byte
	}
	// good builds a valid input for key, then lets mutate change it.
	good := func(key softKey) input {
		q := goodQuote(nonce, pcrs).marshal()
		return input{key.public(), q, key.sign(t, q), nonce, maps.Clone(pcrs)}
	}
	// spec re-signs a modified quote structure with the AK.
	spec := func(key softKey, change func(*quoteSpec)) input {
		in := good(key)
		s := goodQuote(nonce, pcrs)
		change(&s)
		in.quote = s.marshal()
		in.sig = key.sign(t, in.quote)
		return in
	}

	for _, tc := range []struct {
		name    string
		in      input
		wantErr string // empty: must verify
		malform bool
	}{
		{name: "ecdsa ok", in: good(ecc)},
		{name: "rsassa ok", in: good(rsaKey)},
		{name: "other nonce", in: func() input { in := good(ecc); in.nonce = []byte("another nonce"); return in }(), wantErr: "nonce"},
		{name: "empty nonce", in: func() input { in := good(ecc); in.nonce = nil; return in }(), wantErr: "nonce"},
		{name: "signed by another key", in: func() input { in := good(ecc); in.sig = other.sign(t, in.quote); return in }(), wantErr: "bad ECDSA signature"},
		{name: "rsa signature for ecc AK", in: func() input { in := good(ecc); in.sig = rsaKey.sign(t, in.quote); return in }(), wantErr: "signature algorithm"},
		{name: "flipped quote byte", in: func() input { in := good(ecc); in.quote[len(in.quote)-1] ^= 1; return in }(), wantErr: "bad ECDSA signature"},
		{name: "flipped rsa quote byte", in: func() input { in := good(rsaKey); in.quote[10] ^= 1; return in }(), wantErr: "bad RSA signature"},
		{name: "trailing byte in quote", in: func() input {
			in := good(ecc)
			in.quote = append(in.quote, 0)
			in.sig = ecc.sign(t, in.quote)
			return in
		}(), wantErr: "trailing", malform: true},
		{name: "trailing byte in signature", in: func() input { in := good(ecc); in.sig = append(in.sig, 0); return in }(), wantErr: "trailing", malform: true},
		{name: "empty signature", in: func() input { in := good(ecc); in.sig = nil; return in }(), malform: true, wantErr: "empty"},
		{name: "wrong magic", in: spec(ecc, func(s *quoteSpec) { s.magic = 0x12345678 }), wantErr: "TPM_GENERATED"},
		{name: "not a quote", in: spec(ecc, func(s *quoteSpec) { s.typ = tpm2.TPMSTAttestCertify }), wantErr: "not a quote"},
		{name: "sha1 bank", in: spec(ecc, func(s *quoteSpec) { s.banks[0].Hash = tpm2.TPMAlgSHA1 }), wantErr: "bank"},
		{name: "two banks", in: spec(ecc, func(s *quoteSpec) {
			s.banks = append(s.banks, tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgSHA1, PCRSelect: pcrSelect(0)})
		}), wantErr: "2 PCR banks"},
		{name: "no PCR selected", in: spec(ecc, func(s *quoteSpec) { s.banks[0].PCRSelect = pcrSelect() }), wantErr: "no PCR"},
		{name: "PCR beyond 23", in: spec(ecc, func(s *quoteSpec) { s.banks[0].PCRSelect = []byte{1, 0, 0, 1} }), wantErr: "beyond"},
		{name: "selection covers an unreported PCR", in: spec(ecc, func(s *quoteSpec) { s.banks[0].PCRSelect = pcrSelect(0, 1, 2, 7, 16) }), wantErr: "covers PCRs"},
		{name: "value reported for an unquoted PCR", in: func() input { in := good(ecc); in.pcrs[8] = make([]byte, 32); return in }(), wantErr: "covers PCRs"},
		{name: "reported PCR missing", in: func() input { in := good(ecc); delete(in.pcrs, 7); return in }(), wantErr: "covers PCRs"},
		{name: "tampered PCR value", in: func() input { in := good(ecc); in.pcrs[7] = bytes.Repeat([]byte{7}, 32); return in }(), wantErr: "do not match"},
		{name: "short PCR value", in: func() input { in := good(ecc); in.pcrs[7] = in.pcrs[7][:20]; return in }(), wantErr: "20 bytes"},
		{name: "negative PCR index", in: func() input { in := good(ecc); in.pcrs[-1] = make([]byte, 32); return in }(), wantErr: "out of range"},
		{name: "digest of other values", in: spec(ecc, func(s *quoteSpec) { d := sha256.Sum256([]byte("x")); s.digest = d[:] }), wantErr: "do not match"},
		{name: "AK not restricted", in: func() input {
			k := newSoftECCAK(t)
			k.pub.ObjectAttributes.Restricted = false
			in := good(k)
			return in
		}(), wantErr: "lacks attribute restricted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyQuote(tc.in.ak, tc.in.quote, tc.in.sig, tc.in.nonce, tc.in.pcrs)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyQuote: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("VerifyQuote = %v, want an error containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrMalformed); got != tc.malform {
				t.Errorf("errors.Is(%v, ErrMalformed) = %v, want %v", err, got, tc.malform)
			}
		})
	}
}

func TestComparePCRs(t *testing.T) {
	got := testPCRs()
	if err := ComparePCRs(map[int][]byte{0: got[0], 7: got[7]}, got); err != nil {
		t.Errorf("ComparePCRs(matching) = %v", err)
	}
	if err := ComparePCRs(nil, got); err != nil {
		t.Errorf("ComparePCRs(nothing expected) = %v", err)
	}
	want := map[int][]byte{0: got[0], 7: make([]byte, 32), 16: make([]byte, 32), 9: got[0]}
	err := ComparePCRs(want, got)
	if err == nil || !strings.HasSuffix(err.Error(), "at PCR 7, 9, 16") {
		t.Errorf("ComparePCRs = %v, want an error naming PCR 7, 9, 16", err)
	}
}
