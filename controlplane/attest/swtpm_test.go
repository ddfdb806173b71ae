package attest

// The protocol against swtpm, a software TPM with a manufacturer-style EK
// certificate chain: swtpm_setup provisions the EK at 0x81010001 and its
// certificate in NV 0x01C00002, signed by a local CA made in a temp dir; the
// agent talks to `swtpm socket` over TCP.

import (
	"testing"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/agent/tpm/swtpmtest"
)

func TestSwtpm(t *testing.T) {
	spec, roots := swtpmtest.Start(t)
	tr, err := agenttpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agenttpm.New(tr, agenttpm.Options{EK: agenttpm.RSA, AK: agenttpm.ECC})
	if err != nil {
		tr.Close()
		t.Fatalf("New: %v", err)
	}
	defer a.Close()
	ek := a.EK()
	if !ek.Persistent {
		t.Error("swtpm's provisioned EK at 0x81010001 was not used")
	}
	if ek.Certificate == nil {
		t.Fatal("no EK certificate read from NV 0x01C00002")
	}

	// The daemon's side: the roots bundle holds the local CA's root and
	// its issuing certificate.
	rootPool, interPool, err := LoadRoots(roots)
	if err != nil {
		t.Fatal(err)
	}
	ekKey, err := ParseEKPublic(ek.Public)
	if err != nil {
		t.Fatalf("ParseEKPublic: %v", err)
	}
	if fp, _ := Fingerprint(ekKey); fp != ek.Fingerprint {
		t.Errorf("daemon fingerprint %s, agent fingerprint %s", fp, ek.Fingerprint)
	}
	policy := Policy{Mode: ModeVerify, Roots: rootPool, Intermediates: interPool}
	if err := policy.CheckEK(ekKey, ek.Certificate); err != nil {
		t.Fatalf("CheckEK with the swtpm local CA: %v", err)
	}
	other := newCA(t, "Other Root", nil)
	if err := (Policy{Mode: ModeVerify, Roots: pool(other.cert), Intermediates: interPool}).CheckEK(ekKey, ek.Certificate); err == nil {
		t.Error("the swtpm EK certificate verified against an unrelated root")
	}

	// The rest of the loop.
	ak, err := ParseAKPublic(a.AK().Public)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewChallenge(ek.Public, ak.Name)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := a.ActivateCredential(c.CredentialBlob, c.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if !SecretsEqual(secret, c.Secret) {
		t.Fatal("wrong activated secret")
	}
	quote, sig, pcrs, err := a.Quote(c.Nonce, quotedPCRs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	if err := VerifyQuote(a.AK().Public, quote, sig, c.Nonce, pcrs); err != nil {
		t.Fatalf("VerifyQuote: %v", err)
	}
	if err := VerifyQuote(a.AK().Public, quote, sig, []byte("another nonce"), pcrs); err == nil {
		t.Error("quote verified with another nonce")
	}
}
