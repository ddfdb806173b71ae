package agentapi

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/machines"
)

func testSealer(t testing.TB, seed byte) *sealer {
	t.Helper()
	s, err := newSealer(bytes.Repeat([]byte{seed}, ChallengeKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testChallenge is a challenge with every field set, its AK one that
// parses.
func testChallenge(t testing.TB) *challenge {
	t.Helper()
	sum := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	return &challenge{
		id:         bytes.Repeat([]byte{0xc1}, challengeIDSize),
		machineID:  "0b7f6c1e-8d7a-4f3b-9d2e-5a6b7c8d9e0f",
		tpm:        true,
		akPublic:   testAK,
		secretHash: sum("secret"),
		nonceHash:  sum("nonce"),
		pcrs:       []int{0, 1, 2, 3, 4, 5, 6, 7, 16, 23},
		expires:    time.Unix(1_900_000_000, 123456789).UTC(),
		reported: machines.SelfRegistration{
			EKFingerprint: strings.Repeat("ab", 32),
			TPMAvailable:  true,
			IP:            "2001:db8::7",
			Hardware: events.Hardware{
				SMBIOSUUID: "4c4c4544-0000-1111-2222-333344445555",
				Serial:     "SN1",
				Product:    "Test Board",
				MACs:       []string{"52:54:00:12:34:56", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"},
			},
		},
	}
}

// ECCAKPublic is the public area of an ECC P-256 AK whose public key is
// point (uncompressed), made in software; exported to the package's
// external tests.
func ECCAKPublic(point []byte) []byte {
	return tpm2.Marshal(tpm2.TPMTPublic{
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
			X: tpm2.TPM2BECCParameter{Buffer: point[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: point[33:]},
		}),
	})
}

// testAK is an AK public area of a fixed key: the same in every process
// (fuzz workers included).
var testAK = func() []byte {
	k, err := ecdh.P256().NewPrivateKey(bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		panic(err)
	}
	return ECCAKPublic(k.PublicKey().Bytes())
}()

// sameChallenge fails unless got is want as sealed (ak aside).
func sameChallenge(t *testing.T, got, want *challenge) {
	t.Helper()
	g, w := *got, *want
	g.ak, w.ak = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("opened\n%+v\nwant\n%+v", g, w)
	}
}

func TestSealOpen(t *testing.T) {
	s := testSealer(t, 1)
	want := testChallenge(t)
	token, err := s.seal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.open(token)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	sameChallenge(t, got, want)
	if got.ak == nil || len(got.ak.Name) == 0 {
		t.Error("the AK is not parsed")
	}
	// Nothing in clear: neither the hashes nor what the agent reported.
	raw, _ := base64.RawURLEncoding.DecodeString(token)
	for _, clear := range [][]byte{want.secretHash, want.nonceHash, want.akPublic, []byte(want.machineID), []byte("Test Board")} {
		if bytes.Contains(raw, clear) {
			t.Errorf("the token holds %q in clear", clear)
		}
	}
	// Two seals of one challenge differ (a fresh nonce each).
	if again, _ := s.seal(want); again == token {
		t.Error("two seals of one challenge are the same token")
	}
	// Another instance with the same key opens it.
	if _, err := testSealer(t, 1).open(token); err != nil {
		t.Errorf("another sealer with the same key: %v", err)
	}
}

func TestSealOpenWithoutTPM(t *testing.T) {
	s := testSealer(t, 1)
	want := &challenge{id: make([]byte, challengeIDSize), machineID: "m", pcrs: []int{}, expires: time.Unix(0, 1).UTC(),
		reported: machines.SelfRegistration{EKFingerprint: "fp", IP: "10.0.0.1", Hardware: events.Hardware{MACs: nil}}}
	token, err := s.seal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.open(token)
	if err != nil {
		t.Fatal(err)
	}
	if got.tpm || got.ak != nil || len(got.akPublic) != 0 || len(got.secretHash) != 0 || len(got.pcrs) != 0 {
		t.Errorf("a challenge without TPM opened as %+v", got)
	}
	if got.machineID != "m" || got.reported.IP != "10.0.0.1" || got.reported.Hardware.MACs != nil || !got.expires.Equal(want.expires) {
		t.Errorf("opened %+v, want %+v", got, want)
	}
}

func TestOpenRefuses(t *testing.T) {
	s := testSealer(t, 1)
	token, err := s.seal(testChallenge(t))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(token)
	flip := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for _, c := range []struct {
		name, token string
		want        error
	}{
		{"empty", "", errUnknownChallenge},
		{"a challenge ID of old", "0123456789abcdef0123456789abcdef", errUnknownChallenge},
		{"not base64url", strings.Repeat("*", 80), errUnknownChallenge},
		{"line breaks", strings.Repeat("\r", 80), errUnknownChallenge},
		{"padded", token + "==", errUnknownChallenge},
		{"truncated", token[:len(token)-4], errUnknownChallenge},
		{"longer", token + "AAAA", errUnknownChallenge},
		{"too long", strings.Repeat("A", maxToken+4), errUnknownChallenge},
		{"another version", flip(0), errUnknownChallenge},
		{"another key ID", flip(1), errOtherKey},
		{"nonce altered", flip(2), errUnknownChallenge},
		{"ciphertext altered", flip(20), errUnknownChallenge},
		{"tag altered", flip(len(raw) - 1), errUnknownChallenge},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got, err := s.open(c.token); !errors.Is(err, c.want) || got != nil {
				t.Errorf("open: %v, %v; want %v", got, err, c.want)
			}
		})
	}
	// Sealed under another key: refused as such, unless the key IDs
	// collide (1 in 256), then as unknown.
	other := testSealer(t, 2)
	tok2, err := other.seal(testChallenge(t))
	if err != nil {
		t.Fatal(err)
	}
	want := errOtherKey
	if other.keyID == s.keyID {
		want = errUnknownChallenge
	}
	if _, err := s.open(tok2); !errors.Is(err, want) {
		t.Errorf("a token of another key: %v, want %v", err, want)
	}
}

// TestOpenUnreadable: a token sealed under the key whose content does
// not decode, or whose AK no longer parses, is refused as unreadable.
func TestOpenUnreadable(t *testing.T) {
	s := testSealer(t, 1)
	c := testChallenge(t)
	c.akPublic = []byte{1, 2, 3}
	token, err := s.seal(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.open(token); !errors.Is(err, errUnreadableChallenge) {
		t.Errorf("an unparsable AK: %v, want errUnreadableChallenge", err)
	}
	// A plaintext with a byte too many, sealed as seal does.
	head := 2 + s.aead.NonceSize()
	raw := make([]byte, head)
	raw[0], raw[1] = tokenVersion, s.keyID
	raw = s.aead.Seal(raw, raw[2:head], append(testChallenge(t).marshal(), 0), raw[:2])
	if _, err := s.open(base64.RawURLEncoding.EncodeToString(raw)); !errors.Is(err, errUnreadableChallenge) {
		t.Errorf("trailing bytes: %v, want errUnreadableChallenge", err)
	}
}

func TestUnmarshalChallengeRefuses(t *testing.T) {
	p := testChallenge(t).marshal()
	for n := range len(p) {
		if _, err := unmarshalChallenge(p[:n]); err == nil {
			t.Fatalf("%d of %d bytes decoded", n, len(p))
		}
	}
	bad := bytes.Clone(p)
	bad[challengeIDSize+8] = 0x80 // flags
	if _, err := unmarshalChallenge(bad); err == nil || !strings.Contains(err.Error(), "flags") {
		t.Errorf("unknown flag: %v", err)
	}
	bad = bytes.Clone(p)
	bad[challengeIDSize+9] = 0x01 // the mask's top byte: PCR 24 and up
	if _, err := unmarshalChallenge(bad); err == nil || !strings.Contains(err.Error(), "PCR") {
		t.Errorf("PCR 24: %v", err)
	}
}

func TestSealRefusesOversize(t *testing.T) {
	c := testChallenge(t)
	c.reported.Hardware.Product = strings.Repeat("x", maxToken)
	if _, err := testSealer(t, 1).seal(c); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("seal of an oversize challenge: %v", err)
	}
}

func TestNewSealerKeySize(t *testing.T) {
	if _, err := newSealer(make([]byte, 16)); err == nil {
		t.Error("a 16-byte key was taken")
	}
}

func TestDeriveChallengeKey(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	k1, err := DeriveChallengeKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := DeriveChallengeKey(bytes.Clone(secret))
	if len(k1) != ChallengeKeySize || !bytes.Equal(k1, k2) {
		t.Fatalf("keys %x and %x of one secret, want the same %d bytes", k1, k2, ChallengeKeySize)
	}
	if bytes.Equal(k1, secret) {
		t.Error("the key is the secret itself")
	}
	other, _ := DeriveChallengeKey(bytes.Repeat([]byte{8}, 32))
	if bytes.Equal(k1, other) {
		t.Error("two secrets give one key")
	}
	if _, err := DeriveChallengeKey(make([]byte, 8)); err == nil {
		t.Error("an 8-byte secret was taken")
	}
}

// BenchmarkChallenge: what Register (seal) and Attest (open, the AK
// parsed again) spend on a challenge.
func BenchmarkChallenge(b *testing.B) {
	s := testSealer(b, 1)
	c := testChallenge(b)
	token, err := s.seal(c)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.seal(c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.open(token); err != nil {
				b.Fatal(err)
			}
		}
	})
}
