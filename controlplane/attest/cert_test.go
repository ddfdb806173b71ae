package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serial int64

func newCA(t testing.TB, name string, parent *testCA) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Test TPM Maker"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

var (
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// issueEK issues an EK certificate the way TPM makers do: empty subject,
// the TPM's identity as a directory name in a critical SAN, the TCG EK
// certificate purpose. extra are more extensions.
func (ca *testCA) issueEK(t testing.TB, ek crypto.PublicKey, extra ...pkix.Extension) []byte {
	t.Helper()
	dirName, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: oidTPMManufacturer, Value: "id:00001014"}},
		{{Type: oidTPMModel, Value: "test"}},
		{{Type: oidTPMVersion, Value: "id:20191023"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}})
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(serial),
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(24 * time.Hour),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertificate},
		ExtraExtensions:    append([]pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}}, extra...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, ek, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestVerifyEKCertificate(t *testing.T) {
	root := newCA(t, "EK Root", nil)
	inter := newCA(t, "EK Issuing CA", root)
	otherRoot := newCA(t, "Other Root", nil)
	ekPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek := &ekPriv.PublicKey
	otherPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	good := inter.issueEK(t, ek)
	c, err := x509.ParseCertificate(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RawSubject) != 2 || len(c.UnhandledCriticalExtensions) != 1 {
		t.Fatalf("test certificate: subject %x, unhandled critical %v; want an empty subject and the SAN", c.RawSubject, c.UnhandledCriticalExtensions)
	}
	// Without removing the SAN, Go refuses: that is what VerifyEKCertificate
	// works around.
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool(root.cert), Intermediates: pool(inter.cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); !errors.As(err, new(x509.UnhandledCriticalExtension)) {
		t.Fatalf("plain Verify = %v, want UnhandledCriticalExtension", err)
	}

	for _, tc := range []struct {
		name          string
		der           []byte
		ek            crypto.PublicKey
		roots, inters *x509.CertPool
		now           time.Time
		wantErr       string
	}{
		{name: "through intermediate", der: good, ek: ek, roots: pool(root.cert), inters: pool(inter.cert)},
		{name: "issued by the root", der: root.issueEK(t, ek), ek: ek, roots: pool(root.cert)},
		{name: "unknown CA", der: good, ek: ek, roots: pool(otherRoot.cert), inters: pool(inter.cert), wantErr: "unknown authority"},
		{name: "missing intermediate", der: good, ek: ek, roots: pool(root.cert), wantErr: "unknown authority"},
		{name: "another key than the EK", der: good, ek: &otherPriv.PublicKey, roots: pool(root.cert), inters: pool(inter.cert), wantErr: "another key"},
		{name: "cert for another key", der: inter.issueEK(t, &otherPriv.PublicKey), ek: ek, roots: pool(root.cert), inters: pool(inter.cert), wantErr: "another key"},
		{name: "other critical extension", der: inter.issueEK(t, ek, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}),
			ek: ek, roots: pool(root.cert), inters: pool(inter.cert), wantErr: "unhandled critical extension"},
		{name: "expired", der: good, ek: ek, roots: pool(root.cert), inters: pool(inter.cert), now: time.Now().Add(48 * time.Hour), wantErr: "expired"},
		{name: "garbage", der: []byte{0x30, 1, 2}, ek: ek, roots: pool(root.cert), wantErr: "verify EK certificate"},
		{name: "none", ek: ek, roots: pool(root.cert), wantErr: "none presented"},
		{name: "no roots", der: good, ek: ek, wantErr: "no roots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := VerifyEKCertificate(tc.der, tc.ek, tc.roots, tc.inters, tc.now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyEKCertificate: %v", err)
				}
				if cert == nil {
					t.Fatal("no certificate returned")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("VerifyEKCertificate = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func writePEM(t *testing.T, path string, certs ...*x509.Certificate) {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRoots(t *testing.T) {
	root := newCA(t, "EK Root", nil)
	inter := newCA(t, "EK Issuing CA", root)
	root2 := newCA(t, "EK Root 2", nil)
	inter2 := newCA(t, "EK Issuing CA 2", root2)
	ekPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ek := &ekPriv.PublicKey

	dir := t.TempDir()
	writePEM(t, filepath.Join(dir, "vendor-a.pem"), root.cert, inter.cert)
	writePEM(t, filepath.Join(dir, "vendor-b", "root.crt"), root2.cert)
	if err := os.WriteFile(filepath.Join(dir, "vendor-b", "issuing.cer"), inter2.cert.Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("EK roots\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	roots, inters, err := LoadRoots(dir)
	if err != nil {
		t.Fatalf("LoadRoots: %v", err)
	}
	for _, ca := range []*testCA{inter, inter2} {
		if _, err := VerifyEKCertificate(ca.issueEK(t, ek), ek, roots, inters, time.Time{}); err != nil {
			t.Errorf("EK issued by %s: %v", ca.cert.Subject.CommonName, err)
		}
	}
	// The intermediates went to their own pool, never among the roots.
	if _, err := VerifyEKCertificate(inter.issueEK(t, ek), ek, roots, nil, time.Time{}); err == nil {
		t.Error("an intermediate was loaded as a root")
	}

	t.Run("no root", func(t *testing.T) {
		d := t.TempDir()
		writePEM(t, filepath.Join(d, "issuing.pem"), inter.cert)
		if _, _, err := LoadRoots(d); err == nil || !strings.Contains(err.Error(), "no self-signed root") {
			t.Fatalf("LoadRoots = %v, want a no root error", err)
		}
	})
	t.Run("bad file", func(t *testing.T) {
		d := t.TempDir()
		writePEM(t, filepath.Join(d, "root.pem"), root.cert)
		if err := os.WriteFile(filepath.Join(d, "broken.crt"), []byte("not a certificate"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadRoots(d); err == nil || !strings.Contains(err.Error(), "broken.crt") {
			t.Fatalf("LoadRoots = %v, want an error naming broken.crt", err)
		}
	})
	t.Run("missing dir", func(t *testing.T) {
		if _, _, err := LoadRoots(filepath.Join(t.TempDir(), "absent")); err == nil {
			t.Fatal("LoadRoots of a missing directory succeeded")
		}
	})
}

func TestPolicy(t *testing.T) {
	root := newCA(t, "EK Root", nil)
	ekPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ek := &ekPriv.PublicKey
	fp, err := Fingerprint(ek)
	if err != nil {
		t.Fatal(err)
	}
	otherPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := root.issueEK(t, ek)

	for _, tc := range []struct {
		name    string
		policy  Policy
		ek      crypto.PublicKey
		cert    []byte
		wantErr string
	}{
		{"any", Policy{Mode: ModeAny}, ek, nil, ""},
		{"allowlisted", Policy{Mode: ModeAllowlist, Allowlist: map[string]bool{fp: true}}, ek, nil, ""},
		{"not allowlisted", Policy{Mode: ModeAllowlist, Allowlist: map[string]bool{fp: true}}, &otherPriv.PublicKey, nil, "not on the allowlist"},
		{"empty allowlist", Policy{Mode: ModeAllowlist}, ek, cert, "not on the allowlist"},
		{"verified", Policy{Mode: ModeVerify, Roots: pool(root.cert)}, ek, cert, ""},
		{"no certificate", Policy{Mode: ModeVerify, Roots: pool(root.cert)}, ek, nil, "none presented"},
		{"certificate of another EK", Policy{Mode: ModeVerify, Roots: pool(root.cert)}, &otherPriv.PublicKey, cert, "another key"},
		{"unset mode", Policy{}, ek, cert, "unknown mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.CheckEK(tc.ek, tc.cert)
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

func TestParseMode(t *testing.T) {
	for _, s := range []string{"verify", "allowlist", "any"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("none"); err == nil {
		t.Error(`ParseMode("none") succeeded`)
	}
}
