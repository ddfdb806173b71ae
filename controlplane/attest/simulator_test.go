//go:build cgo

package attest

// The whole protocol against the in-process TPM simulator: the agent's
// package on one side, this package on the other. The simulator is one per
// process, so these tests run one after another, each on a freshly
// manufactured TPM.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"maps"
	"strings"
	"testing"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// boot opens a fresh simulator and the agent's Attester on it. tr stays
// usable for the test's own TPM commands until the test ends.
func boot(t *testing.T, opts agenttpm.Options) (*agenttpm.Attester, transport.TPM) {
	t.Helper()
	tr, err := agenttpm.Open("simulator")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agenttpm.New(tr, opts)
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, tr
}

// register is what the daemon does with a RegisterRequest.
func register(t *testing.T, a *agenttpm.Attester) (*AK, *Challenge) {
	t.Helper()
	ak, err := ParseAKPublic(a.AK().Public)
	if err != nil {
		t.Fatalf("ParseAKPublic: %v", err)
	}
	c, err := NewChallenge(a.EK().Public, ak.Name)
	if err != nil {
		t.Fatalf("NewChallenge: %v", err)
	}
	return ak, c
}

func extend(t *testing.T, tr transport.TPM, pcr int, data string) {
	t.Helper()
	if _, err := (tpm2.PCREvent{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		EventData: tpm2.TPM2BEvent{Buffer: []byte(data)},
	}).Execute(tr); err != nil {
		t.Fatalf("PCR_Event(%d): %v", pcr, err)
	}
}

func TestFullLoop(t *testing.T) {
	for _, opts := range []agenttpm.Options{
		{EK: agenttpm.RSA, AK: agenttpm.ECC},
		{EK: agenttpm.RSA, AK: agenttpm.RSA},
		{EK: agenttpm.ECC, AK: agenttpm.ECC},
		{EK: agenttpm.ECC, AK: agenttpm.RSA},
	} {
		t.Run(string(opts.EK)+"-ek-"+string(opts.AK)+"-ak", func(t *testing.T) {
			a, tr := boot(t, opts)
			extend(t, tr, 16, "kernel")

			// Register: the daemon derives identity and AK name itself.
			ekKey, err := ParseEKPublic(a.EK().Public)
			if err != nil {
				t.Fatalf("ParseEKPublic: %v", err)
			}
			fp, err := Fingerprint(ekKey)
			if err != nil {
				t.Fatal(err)
			}
			if fp != a.EK().Fingerprint {
				t.Errorf("daemon fingerprint %s, agent fingerprint %s", fp, a.EK().Fingerprint)
			}
			if err := (Policy{Mode: ModeAllowlist, Allowlist: map[string]bool{fp: true}}).CheckEK(ekKey, a.EK().Certificate); err != nil {
				t.Errorf("CheckEK: %v", err)
			}
			ak, c := register(t, a)
			if !bytes.Equal(ak.Name, a.AK().Name) {
				t.Errorf("daemon AK name %x, agent AK name %x", ak.Name, a.AK().Name)
			}

			// Attest.
			secret, err := a.ActivateCredential(c.CredentialBlob, c.EncryptedSecret)
			if err != nil {
				t.Fatalf("ActivateCredential: %v", err)
			}
			if !SecretsEqual(secret, c.Secret) {
				t.Fatalf("activated secret %x, want %x", secret, c.Secret)
			}
			quote, sig, pcrs, err := a.Quote(c.Nonce, quotedPCRs)
			if err != nil {
				t.Fatalf("Quote: %v", err)
			}
			if err := VerifyQuote(a.AK().Public, quote, sig, c.Nonce, pcrs); err != nil {
				t.Fatalf("VerifyQuote: %v", err)
			}
			if err := ComparePCRs(pcrs, pcrs); err != nil {
				t.Errorf("ComparePCRs: %v", err)
			}
			want := map[int][]byte{16: bytes.Repeat([]byte{0}, 32)}
			if err := ComparePCRs(want, pcrs); err == nil || !strings.Contains(err.Error(), "PCR 16") {
				t.Errorf("ComparePCRs(PCR 16 zero) = %v, want an error naming PCR 16", err)
			}
		})
	}
}

// restrictedSigningKey creates another primary restricted signing key:
// a second AK that is not the agent's.
func restrictedSigningKey(t *testing.T, tr transport.TPM, unique string, restricted bool) (tpm2.NamedHandle, []byte) {
	t.Helper()
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgECC,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
				UserWithAuth: true, Restricted: restricted, SignEncrypt: true,
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
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: []byte(unique)}}),
		}),
	}.Execute(tr)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	t.Cleanup(func() { tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tr) })
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, rsp.OutPublic.Bytes()
}

func TestCredentialBoundToAnotherAK(t *testing.T) {
	a, tr := boot(t, agenttpm.Options{})
	other, otherPub := restrictedSigningKey(t, tr, "another AK", true)
	otherAK, err := ParseAKPublic(otherPub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(otherAK.Name, other.Name.Buffer) {
		t.Fatal("name mismatch for the other AK")
	}
	c, err := NewChallenge(a.EK().Public, otherAK.Name)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := a.ActivateCredential(c.CredentialBlob, c.EncryptedSecret)
	if err == nil && SecretsEqual(secret, c.Secret) {
		t.Fatal("the agent's AK activated a credential bound to another AK")
	}
	t.Logf("refused as expected: %v", err)
}

func TestCredentialForAnotherEK(t *testing.T) {
	a, _ := boot(t, agenttpm.Options{})
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewChallenge(tpm2.Marshal(ekPublic(t, &priv.PublicKey)), a.AK().Name)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := a.ActivateCredential(c.CredentialBlob, c.EncryptedSecret)
	if err == nil && SecretsEqual(secret, c.Secret) {
		t.Fatal("the TPM activated a credential made for another EK")
	}
	t.Logf("refused as expected: %v", err)
}

func TestWrongSecret(t *testing.T) {
	a, _ := boot(t, agenttpm.Options{})
	_, c1 := register(t, a)
	_, c2 := register(t, a)
	s1, err := a.ActivateCredential(c1.CredentialBlob, c1.EncryptedSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !SecretsEqual(s1, c1.Secret) {
		t.Fatal("the right secret was refused")
	}
	// The answer to an earlier challenge does not answer a later one.
	if SecretsEqual(s1, c2.Secret) {
		t.Error("the secret of one challenge answered another")
	}
	bad := bytes.Clone(s1)
	bad[0] ^= 1
	if SecretsEqual(bad, c1.Secret) {
		t.Error("a wrong secret was accepted")
	}
	// A tampered blob does not activate.
	blob := bytes.Clone(c2.CredentialBlob)
	blob[len(blob)-1] ^= 1
	if s, err := a.ActivateCredential(blob, c2.EncryptedSecret); err == nil && SecretsEqual(s, c2.Secret) {
		t.Error("a tampered credential blob activated")
	}
}

func TestReplayedNonce(t *testing.T) {
	a, _ := boot(t, agenttpm.Options{})
	_, c1 := register(t, a)
	_, c2 := register(t, a)
	quote, sig, pcrs, err := a.Quote(c1.Nonce, quotedPCRs)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyQuote(a.AK().Public, quote, sig, c1.Nonce, pcrs); err != nil {
		t.Fatalf("VerifyQuote(own nonce): %v", err)
	}
	// The quote made for the first challenge, replayed for the second.
	if err := VerifyQuote(a.AK().Public, quote, sig, c2.Nonce, pcrs); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Fatalf("VerifyQuote(replayed) = %v, want a nonce error", err)
	}
}

func TestTamperedQuote(t *testing.T) {
	for _, opts := range []agenttpm.Options{{AK: agenttpm.ECC}, {AK: agenttpm.RSA}} {
		t.Run(string(opts.AK)+"-ak", func(t *testing.T) {
			a, _ := boot(t, opts)
			_, c := register(t, a)
			quote, sig, pcrs, err := a.Quote(c.Nonce, quotedPCRs)
			if err != nil {
				t.Fatal(err)
			}
			// Every byte of the quote is covered: the magic, the signer's
			// name, the nonce, the clock, the selection and the digest.
			for i := range quote {
				q := bytes.Clone(quote)
				q[i] ^= 0x40
				if err := VerifyQuote(a.AK().Public, q, sig, c.Nonce, pcrs); err == nil {
					t.Fatalf("quote with byte %d flipped verified", i)
				}
			}
			for _, i := range []int{0, 7, len(sig) / 2, len(sig) - 1} {
				s := bytes.Clone(sig)
				s[i] ^= 0x40
				if err := VerifyQuote(a.AK().Public, quote, s, c.Nonce, pcrs); err == nil {
					t.Fatalf("signature with byte %d flipped verified", i)
				}
			}
		})
	}
}

func TestTamperedPCRValue(t *testing.T) {
	a, tr := boot(t, agenttpm.Options{})
	_, c := register(t, a)
	quote, sig, pcrs, err := a.Quote(c.Nonce, quotedPCRs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		change  func(map[int][]byte)
		wantErr string
	}{
		{"value changed", func(m map[int][]byte) { m[0] = sha256.New().Sum(nil) }, "do not match"},
		{"value dropped", func(m map[int][]byte) { delete(m, 7) }, "covers PCRs"},
		{"value added", func(m map[int][]byte) { m[8] = make([]byte, 32) }, "covers PCRs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := maps.Clone(pcrs)
			tc.change(m)
			if err := VerifyQuote(a.AK().Public, quote, sig, c.Nonce, m); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("VerifyQuote = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	// A measurement after the quote: today's values do not match the quote
	// of before.
	t.Run("measured after the quote", func(t *testing.T) {
		extend(t, tr, 16, "late")
		_, _, now, err := a.Quote([]byte("another nonce"), quotedPCRs)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(now[16], pcrs[16]) {
			t.Fatal("PCR 16 did not change")
		}
		if err := VerifyQuote(a.AK().Public, quote, sig, c.Nonce, now); err == nil {
			t.Fatal("old quote verified with new PCR values")
		}
	})
}

// TestAKWrongAttributes: a key that is not restricted can sign anything,
// including a forged TPMS_ATTEST that claims any PCR values. The TPM lets
// it; the verifier must not.
func TestAKWrongAttributes(t *testing.T) {
	a, tr := boot(t, agenttpm.Options{})
	_, c := register(t, a)
	key, pub := restrictedSigningKey(t, tr, "unrestricted", false)

	pcrs := map[int][]byte{0: make([]byte, 32)}
	forged := goodQuote(c.Nonce, pcrs).marshal()
	digest := sha256.Sum256(forged)
	sign := func(h tpm2.NamedHandle) (*tpm2.SignResponse, error) {
		return tpm2.Sign{
			KeyHandle:  tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)},
			Digest:     tpm2.TPM2BDigest{Buffer: digest[:]},
			InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tr)
	}
	rsp, err := sign(key)
	if err != nil {
		t.Fatalf("Sign with the unrestricted key: %v", err)
	}
	if err := VerifyQuote(pub, forged, tpm2.Marshal(rsp.Signature), c.Nonce, pcrs); err == nil || !strings.Contains(err.Error(), "lacks attribute restricted") {
		t.Fatalf("VerifyQuote(unrestricted key) = %v, want an error naming restricted", err)
	}
	if _, err := ParseAKPublic(pub); err == nil || !strings.Contains(err.Error(), "restricted") {
		t.Fatalf("ParseAKPublic(unrestricted key) = %v, want an error naming restricted", err)
	}
	// The real AK, being restricted, refuses to sign the forgery.
	if _, err := sign(tpm2.NamedHandle{Handle: a.AK().Handle, Name: tpm2.TPM2BName{Buffer: a.AK().Name}}); err == nil {
		t.Fatal("the restricted AK signed a forged TPMS_ATTEST")
	}
}

// writeEKCertificate provisions the EK certificate index as a manufacturer
// would (platform auth).
func writeEKCertificate(t *testing.T, tr transport.TPM, index tpm2.TPMHandle, der []byte) {
	t.Helper()
	pub := tpm2.TPMSNVPublic{
		NVIndex: index,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			PPWrite: true, PPRead: true, OwnerRead: true, AuthRead: true,
			NoDA: true, PlatformCreate: true, NT: tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(len(der)),
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHPlatform, PublicInfo: tpm2.New2B(pub)}).Execute(tr); err != nil {
		t.Fatalf("NVDefineSpace: %v", err)
	}
	for off := 0; off < len(der); off += 512 {
		pub.Attributes.Written = off > 0
		name, err := tpm2.NVName(&pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.NVWrite{
			AuthHandle: tpm2.TPMRHPlatform,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: *name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: der[off:min(off+512, len(der))]},
			Offset:     uint16(off),
		}).Execute(tr); err != nil {
			t.Fatalf("NVWrite: %v", err)
		}
	}
}

func TestEKCertificateFromTPM(t *testing.T) {
	root := newCA(t, "EK Root", nil)
	inter := newCA(t, "EK Issuing CA", root)
	unknown := newCA(t, "Unknown Root", nil)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		ekType  agenttpm.KeyType
		index   tpm2.TPMHandle
		issue   func(ek any) []byte
		policy  Policy
		wantErr string
	}{
		{"rsa ek verified", agenttpm.RSA, 0x01C00002, func(ek any) []byte { return inter.issueEK(t, ek) },
			Policy{Mode: ModeVerify, Roots: pool(root.cert), Intermediates: pool(inter.cert)}, ""},
		{"ecc ek verified", agenttpm.ECC, 0x01C0000A, func(ek any) []byte { return root.issueEK(t, ek) },
			Policy{Mode: ModeVerify, Roots: pool(root.cert)}, ""},
		{"unknown CA", agenttpm.RSA, 0x01C00002, func(ek any) []byte { return inter.issueEK(t, ek) },
			Policy{Mode: ModeVerify, Roots: pool(unknown.cert), Intermediates: pool(inter.cert)}, "unknown authority"},
		{"certificate of another key", agenttpm.RSA, 0x01C00002, func(any) []byte { return inter.issueEK(t, &otherKey.PublicKey) },
			Policy{Mode: ModeVerify, Roots: pool(root.cert), Intermediates: pool(inter.cert)}, "another key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// First boot: learn the EK, as a manufacturer does, and
			// provision its certificate.
			tr, err := agenttpm.Open("simulator")
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			a, err := agenttpm.New(keepOpen{tr}, agenttpm.Options{EK: tc.ekType})
			if err != nil {
				t.Fatal(err)
			}
			if a.EK().Certificate != nil {
				t.Fatal("fresh simulator has an EK certificate")
			}
			der := tc.issue(a.EK().Key)
			a.Close() // the simulator holds only three objects
			writeEKCertificate(t, tr, tc.index, der)

			// The agent reads it back (the daemon's side only sees bytes).
			b, err := agenttpm.New(keepOpen{tr}, agenttpm.Options{EK: tc.ekType})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if !bytes.Equal(b.EK().Certificate, der) {
				t.Fatalf("agent read a %d-byte certificate, want the %d written", len(b.EK().Certificate), len(der))
			}
			ekKey, err := ParseEKPublic(b.EK().Public)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.policy.CheckEK(ekKey, b.EK().Certificate)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckEK: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckEK = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// keepOpen lets a second Attester share a transport without closing it.
type keepOpen struct{ transport.TPMCloser }

func (keepOpen) Close() error { return nil }
