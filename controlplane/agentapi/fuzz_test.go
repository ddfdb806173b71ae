package agentapi

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// FuzzQuoteNonce: the quote comes from the network; reading its nonce
// never panics, and a well-formed quote yields its extraData.
func FuzzQuoteNonce(f *testing.F) {
	good := tpm2.Marshal(tpm2.TPMSAttest{
		Magic:     tpm2.TPMGeneratedValue,
		Type:      tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: []byte("nonce")},
		Attested:  tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{}),
	})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		nonce, err := quoteNonce(b)
		if err == nil && bytes.Equal(b, good) && string(nonce) != "nonce" {
			t.Errorf("nonce %q, want %q", nonce, "nonce")
		}
	})
}

// FuzzOpenChallenge: the challenge_id comes from the network; opening it
// never panics, opens only what the key sealed, and what opens is what
// was sealed.
func FuzzOpenChallenge(f *testing.F) {
	s := testSealer(f, 1)
	want := testChallenge(f)
	good, err := s.seal(want)
	if err != nil {
		f.Fatal(err)
	}
	other, err := testSealer(f, 2).seal(want)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{good, other, "", "0123456789abcdef0123456789abcdef", good[:len(good)/2], good + "A"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := s.open(token)
		if err != nil {
			if c != nil {
				t.Errorf("open failed (%v) but returned a challenge", err)
			}
			return
		}
		// AES-GCM: nothing but a sealed token opens, and the fuzzer
		// seals nothing; the seed's is the one it knows.
		if !reflect.DeepEqual(c.marshal(), want.marshal()) {
			t.Errorf("%q opened as a challenge that was never sealed: %+v", token, c)
		}
	})
}

// FuzzUnmarshalChallenge: decoding a sealed plaintext never panics, and
// what decodes encodes back to a plaintext that decodes the same.
func FuzzUnmarshalChallenge(f *testing.F) {
	f.Add(testChallenge(f).marshal())
	f.Add((&challenge{id: make([]byte, challengeIDSize), pcrs: []int{}}).marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		c, err := unmarshalChallenge(p)
		if err != nil {
			return
		}
		again, err := unmarshalChallenge(c.marshal())
		if err != nil {
			t.Fatalf("%x decodes, its encoding does not: %v", p, err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Errorf("decoded %+v, then %+v", c, again)
		}
	})
}
