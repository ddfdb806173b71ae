package agentapi

import (
	"bytes"
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
