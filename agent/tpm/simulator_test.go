//go:build cgo

package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The simulator is one instance per process: these tests run one after
// another and each closes what it opened. Open("simulator:SEED")
// manufactures a TPM whose seeds derive from SEED, so two opens with the
// same seed are the same machine booted twice.

func openSim(t *testing.T, spec string) transport.TPMCloser {
	t.Helper()
	tr, err := Open(spec)
	if err != nil {
		t.Fatalf("Open(%s): %v", spec, err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func newAttester(t *testing.T, tr transport.TPMCloser, opts Options) *Attester {
	t.Helper()
	a, err := New(tr, opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		ekType any
		akType any
	}{
		{"defaults", Options{}, &rsa.PublicKey{}, &ecdsa.PublicKey{}},
		{"rsa-ek-rsa-ak", Options{EK: RSA, AK: RSA}, &rsa.PublicKey{}, &rsa.PublicKey{}},
		{"ecc-ek-ecc-ak", Options{EK: ECC, AK: ECC}, &ecdsa.PublicKey{}, &ecdsa.PublicKey{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAttester(t, openSim(t, "simulator"), tc.opts)
			ek, ak := a.EK(), a.AK()
			if got, want := typeName(ek.Key), typeName(tc.ekType); got != want {
				t.Errorf("EK key %s, want %s", got, want)
			}
			if got, want := typeName(ak.Key), typeName(tc.akType); got != want {
				t.Errorf("AK key %s, want %s", got, want)
			}
			der, err := x509.MarshalPKIXPublicKey(ek.Key)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(der)
			if want := hex.EncodeToString(sum[:]); ek.Fingerprint != want {
				t.Errorf("EK fingerprint %s, want %s", ek.Fingerprint, want)
			}
			if ek.Persistent || ek.Certificate != nil || ek.CertificateError != nil {
				t.Errorf("simulator EK: persistent %v, certificate %x, error %v; want false, nil, nil", ek.Persistent, ek.Certificate, ek.CertificateError)
			}

			// The public areas round-trip and are what the keys say.
			ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
			if err != nil {
				t.Fatalf("EK public: %v", err)
			}
			if k, _ := tpm2.Pub(*ekPub); !k.(interface{ Equal(crypto.PublicKey) bool }).Equal(ek.Key) {
				t.Error("EK public area and key differ")
			}
			akPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ak.Public)
			if err != nil {
				t.Fatalf("AK public: %v", err)
			}
			at := akPub.ObjectAttributes
			if !at.Restricted || !at.SignEncrypt || at.Decrypt || !at.FixedTPM || !at.FixedParent || !at.SensitiveDataOrigin {
				t.Errorf("AK attributes %+v", at)
			}
			name, err := tpm2.ObjectName(akPub)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(name.Buffer, ak.Name) {
				t.Errorf("AK name %x, want %x", ak.Name, name.Buffer)
			}
		})
	}
}

func typeName(k any) string {
	switch k.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "ECDSA"
	}
	return "other"
}

// TestSameKeysEveryBoot opens the same simulated machine twice: the EK and
// the AK come back identical, with nothing stored outside the TPM. Another
// machine (seed) has other keys.
func TestSameKeysEveryBoot(t *testing.T) {
	boot := func(spec string) (EK, AK) {
		tr, err := Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		a, err := New(tr, Options{})
		if err != nil {
			tr.Close()
			t.Fatal(err)
		}
		defer a.Close()
		return a.EK(), a.AK()
	}
	ek1, ak1 := boot("simulator:42")
	ek2, ak2 := boot("simulator:42")
	if ek1.Fingerprint != ek2.Fingerprint {
		t.Errorf("EK changed across boots: %s then %s", ek1.Fingerprint, ek2.Fingerprint)
	}
	if !bytes.Equal(ak1.Public, ak2.Public) || !bytes.Equal(ak1.Name, ak2.Name) {
		t.Errorf("AK changed across boots: %x then %x", ak1.Name, ak2.Name)
	}
	ek3, ak3 := boot("simulator:43")
	if ek3.Fingerprint == ek1.Fingerprint || bytes.Equal(ak3.Name, ak1.Name) {
		t.Error("another machine has the same EK or AK")
	}
}

// TestSameAKTwiceInOneTPM recreates the AK in a running TPM.
func TestSameAKTwiceInOneTPM(t *testing.T) {
	tr := openSim(t, "simulator")
	ak1, l1, err := createAK(tr, ECC)
	if err != nil {
		t.Fatal(err)
	}
	defer flush(tr, l1)
	ak2, l2, err := createAK(tr, ECC)
	if err != nil {
		t.Fatal(err)
	}
	defer flush(tr, l2)
	if !bytes.Equal(ak1.Public, ak2.Public) {
		t.Error("the same template gave two AKs")
	}
}

func TestSimulatorOpenTwice(t *testing.T) {
	openSim(t, "simulator")
	if tr, err := Open("simulator"); err == nil {
		tr.Close()
		t.Fatal("second Open(simulator) succeeded while the first is open")
	}
}

func TestCloseTwice(t *testing.T) {
	tr := openSim(t, "simulator")
	a, err := New(tr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, _, err := a.Quote([]byte("n"), []int{0}); err == nil {
		t.Error("Quote after Close succeeded")
	}
	if _, err := a.ActivateCredential([]byte{1}, []byte{1}); err == nil {
		t.Error("ActivateCredential after Close succeeded")
	}
}

// TestTransientHandlesFlushed checks that Close leaves no object loaded.
func TestTransientHandlesFlushed(t *testing.T) {
	tr := openSim(t, "simulator")
	a, err := New(tr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := loadedObjects(t, tr); n != 2 {
		t.Errorf("%d objects loaded with an open Attester, want 2 (EK and AK)", n)
	}
	// Failed activations must not leak their policy sessions (the
	// simulator has three session slots).
	for range 5 {
		if _, err := a.ActivateCredential([]byte{0, 1, 2}, []byte{3}); err == nil {
			t.Fatal("ActivateCredential of garbage succeeded")
		}
	}
	testActivate(t, a)
	// Close also closes the transport: keep it open to look afterwards.
	a.tpm = keepOpen{tr}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := loadedObjects(t, tr); n != 0 {
		t.Errorf("%d objects still loaded after Close", n)
	}
}

type keepOpen struct{ transport.TPMCloser }

func (keepOpen) Close() error { return nil }

func loadedObjects(t *testing.T, tr transport.TPM) int {
	t.Helper()
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapHandles,
		Property:      uint32(tpm2.TPMHTTransient) << 24,
		PropertyCount: 64,
	}.Execute(tr)
	if err != nil {
		t.Fatal(err)
	}
	h, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	return len(h.Handle)
}

// TestPersistentEK finds the EK where provisioning leaves it.
func TestPersistentEK(t *testing.T) {
	tr := openSim(t, "simulator")
	ek, l, err := readEK(tr, RSA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     l.named(),
		PersistentHandle: ekHandleRSA,
	}).Execute(tr); err != nil {
		t.Fatalf("EvictControl: %v", err)
	}
	flush(tr, l)
	a := newAttester(t, tr, Options{})
	if !a.EK().Persistent || a.EK().Fingerprint != ek.Fingerprint {
		t.Errorf("EK persistent %v fingerprint %s, want true and %s", a.EK().Persistent, a.EK().Fingerprint, ek.Fingerprint)
	}
	// The persistent EK must still answer challenges: the policy session
	// works on it as on a transient one.
	testActivate(t, a)
}

// testActivate makes a credential with the TPM itself (MakeCredential
// needs no secret) and activates it.
func testActivate(t *testing.T, a *Attester) {
	t.Helper()
	secret := []byte("0123456789abcdef0123456789abcdef")
	mc, err := tpm2.MakeCredential{
		Handle:     a.ekH.handle,
		Credential: tpm2.TPM2BDigest{Buffer: secret},
		ObjectName: tpm2.TPM2BName{Buffer: a.AK().Name},
	}.Execute(a.tpm)
	if err != nil {
		t.Fatalf("MakeCredential: %v", err)
	}
	got, err := a.ActivateCredential(mc.CredentialBlob.Buffer, mc.Secret.Buffer)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Errorf("ActivateCredential = %x, want %x", got, secret)
	}
}

func TestActivateMadeByTPM(t *testing.T) {
	for _, opts := range []Options{{EK: RSA, AK: ECC}, {EK: ECC, AK: RSA}} {
		t.Run(string(opts.EK)+"-ek", func(t *testing.T) {
			testActivate(t, newAttester(t, openSim(t, "simulator"), opts))
		})
	}
}

// writeNV provisions an EK certificate index the way a manufacturer does
// (platform auth, readable with its own empty auth or the owner's), padded
// to size.
func writeNV(t *testing.T, tr transport.TPM, index tpm2.TPMHandle, data []byte, size int) {
	t.Helper()
	writeNVWith(t, tr, tpm2.TPMANV{
		PPWrite: true, PPRead: true, OwnerRead: true, AuthRead: true,
		NoDA: true, PlatformCreate: true,
		NT: tpm2.TPMNTOrdinary,
	}, index, data, size)
}

func writeNVWith(t *testing.T, tr transport.TPM, attrs tpm2.TPMANV, index tpm2.TPMHandle, data []byte, size int) {
	t.Helper()
	pub := tpm2.TPMSNVPublic{
		NVIndex:    index,
		NameAlg:    tpm2.TPMAlgSHA256,
		Attributes: attrs,
		DataSize:   uint16(size),
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.TPMRHPlatform,
		PublicInfo: tpm2.New2B(pub),
	}).Execute(tr); err != nil {
		t.Fatalf("NVDefineSpace: %v", err)
	}
	padded := append(bytes.Clone(data), bytes.Repeat([]byte{0xff}, size-len(data))...)
	for off := 0; off < len(padded); off += 512 {
		end := min(off+512, len(padded))
		pub.Attributes.Written = off > 0
		n, err := tpm2.NVName(&pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.NVWrite{
			AuthHandle: tpm2.TPMRHPlatform,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: *n},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: padded[off:end]},
			Offset:     uint16(off),
		}).Execute(tr); err != nil {
			t.Fatalf("NVWrite at %d: %v", off, err)
		}
	}
}

// bigCert is a certificate for key longer than one NV read (1024 bytes).
func bigCert(t *testing.T, key crypto.PublicKey) []byte {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "test EK CA"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames: []string{
			strings.Repeat("a", 60) + ".example", strings.Repeat("b", 60) + ".example",
			strings.Repeat("c", 60) + ".example", strings.Repeat("d", 60) + ".example",
			strings.Repeat("e", 60) + ".example",
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(der) <= 1024 {
		t.Fatalf("certificate of %d bytes is too small to test chunked reads", len(der))
	}
	return der
}

func TestEKCertificateFromNV(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		idx  tpm2.TPMHandle
		pad  int
	}{
		{"rsa", Options{EK: RSA}, ekCertRSA, 0},
		{"rsa-padded", Options{EK: RSA}, ekCertRSA, 100},
		{"ecc", Options{EK: ECC}, ekCertECC, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := openSim(t, "simulator")
			ek, l, err := readEK(tr, tc.opts.EK)
			if err != nil {
				t.Fatal(err)
			}
			flush(tr, l)
			cert := bigCert(t, ek.Key)
			writeNV(t, tr, tc.idx, cert, len(cert)+tc.pad)
			a := newAttester(t, tr, tc.opts)
			if !bytes.Equal(a.EK().Certificate, cert) {
				t.Errorf("EK certificate of %d bytes, want the %d written", len(a.EK().Certificate), len(cert))
			}
		})
	}
}

// TestEKCertificateUnreadable: an index only the platform may read is
// reported, and the EK and AK still work.
func TestEKCertificateUnreadable(t *testing.T) {
	tr := openSim(t, "simulator")
	writeNVWith(t, tr, tpm2.TPMANV{PPWrite: true, PPRead: true, NoDA: true, PlatformCreate: true, NT: tpm2.TPMNTOrdinary},
		ekCertRSA, []byte{0x30, 0x03, 0x02, 0x01, 0x01}, 5)
	a := newAttester(t, tr, Options{})
	if a.EK().Certificate != nil || a.EK().CertificateError == nil {
		t.Fatalf("certificate %x, error %v; want nil and an error", a.EK().Certificate, a.EK().CertificateError)
	}
	t.Logf("reported: %v", a.EK().CertificateError)
	testActivate(t, a)
}

func TestQuotePCRValues(t *testing.T) {
	tr := openSim(t, "simulator")
	a := newAttester(t, tr, Options{})
	if _, err := (tpm2.PCREvent{
		PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)},
		EventData: tpm2.TPM2BEvent{Buffer: []byte("measured")},
	}).Execute(tr); err != nil {
		t.Fatalf("PCR_Event: %v", err)
	}
	all := make([]int, 24)
	for i := range all {
		all[i] = 23 - i // unsorted on purpose
	}
	quote, sig, values, err := a.Quote([]byte("nonce"), append(all, 7))
	if err != nil {
		t.Fatal(err)
	}
	if len(values) != 24 {
		t.Fatalf("%d PCR values, want 24", len(values))
	}
	if bytes.Equal(values[16], make([]byte, 32)) {
		t.Error("PCR 16 is still zero after an event")
	}
	if len(quote) == 0 || len(sig) == 0 {
		t.Fatal("empty quote or signature")
	}
	attest, err := tpm2.Unmarshal[tpm2.TPMSAttest](quote)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(attest.ExtraData.Buffer, []byte("nonce")) {
		t.Errorf("quote extra data %q, want %q", attest.ExtraData.Buffer, "nonce")
	}
	if _, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig); err != nil {
		t.Errorf("signature: %v", err)
	}

	for _, bad := range [][]int{nil, {24}, {-1}} {
		if _, _, _, err := a.Quote([]byte("n"), bad); err == nil {
			t.Errorf("Quote(%v) succeeded", bad)
		}
	}
	if _, _, _, err := a.Quote(nil, []int{0}); err == nil {
		t.Error("Quote without a nonce succeeded")
	}
}

func TestUnknownKeyType(t *testing.T) {
	tr := openSim(t, "simulator")
	if _, err := New(tr, Options{EK: "dsa"}); err == nil || !strings.Contains(err.Error(), "unknown key type") {
		t.Errorf("New(EK: dsa) = %v", err)
	}
	if _, err := New(tr, Options{AK: "dsa"}); err == nil || !strings.Contains(err.Error(), "unknown key type") {
		t.Errorf("New(AK: dsa) = %v", err)
	}
	if n := loadedObjects(t, tr); n != 0 {
		t.Errorf("%d objects left loaded after failed New", n)
	}
}
