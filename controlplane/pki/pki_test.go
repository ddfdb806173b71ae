package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/pki"
)

const (
	machineID = "0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a"
	ekFP      = "5d2f0c1b8e4a7f3d9c6b2a1e0f8d7c6b5a4e3d2c1b0a9f8e7d6c5b4a3e2d1c0b"
)

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	ca, created, err := pki.LoadOrCreate(dir)
	if err != nil || !created {
		t.Fatalf("first start: %v, created %v; want a new CA", err, created)
	}
	fi, err := os.Stat(filepath.Join(dir, pki.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	again, created, err := pki.LoadOrCreate(dir)
	if err != nil || created || !again.Certificate().Equal(ca.Certificate()) {
		t.Fatalf("second start: %v, created %v; want the same CA", err, created)
	}
	if !ca.Certificate().IsCA || ca.Certificate().NotAfter.Before(time.Now().Add(9*365*24*time.Hour)) {
		t.Errorf("CA certificate %+v: want a CA valid for years", ca.Certificate())
	}

	t.Run("key alone", func(t *testing.T) {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, pki.KeyFile), []byte("x"), 0o600)
		if _, _, err := pki.LoadOrCreate(d); err == nil || !strings.Contains(err.Error(), "remove both") {
			t.Errorf("got %v, want an error saying the certificate is missing", err)
		}
	})
	t.Run("key readable by others", func(t *testing.T) {
		os.Chmod(filepath.Join(dir, pki.KeyFile), 0o644)
		defer os.Chmod(filepath.Join(dir, pki.KeyFile), 0o600)
		if _, _, err := pki.LoadOrCreate(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("got %v, want chmod 600", err)
		}
	})
	t.Run("mismatched key", func(t *testing.T) {
		other := t.TempDir()
		pki.LoadOrCreate(other)
		if _, err := pki.Load(filepath.Join(dir, pki.CertFile), filepath.Join(other, pki.KeyFile)); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Errorf("got %v, want a key that does not match", err)
		}
	})
	t.Run("not PEM", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "ca.crt")
		os.WriteFile(bad, []byte("hello"), 0o644)
		if _, err := pki.Load(bad, filepath.Join(dir, pki.KeyFile)); err == nil || !strings.Contains(err.Error(), "no PEM CERTIFICATE") {
			t.Errorf("got %v, want no PEM block", err)
		}
	})
}

func TestIssue(t *testing.T) {
	ca, _, err := pki.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	node, err := ca.IssueNode(key.Public(), machineID, ekFP, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, fp, err := ca.VerifyNode(node, now)
	if err != nil || id != machineID || fp != ekFP {
		t.Fatalf("VerifyNode: %q, %q, %v; want the machine and EK", id, fp, err)
	}
	if got := node.NotAfter.Sub(now); got < 23*time.Hour || got > 24*time.Hour {
		t.Errorf("lifetime %s, want 24h", got)
	}
	if _, _, err := ca.VerifyNode(node, now.Add(25*time.Hour)); err == nil {
		t.Error("expired node certificate verified")
	}
	other, _, _ := pki.LoadOrCreate(t.TempDir())
	if _, _, err := other.VerifyNode(node, now); err == nil {
		t.Error("another CA's node certificate verified")
	}

	srv, err := ca.IssueServer(key.Public(), []string{"localhost", "127.0.0.1"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); err != nil {
		t.Errorf("server certificate: %v", err)
	}
	if _, _, err := ca.VerifyNode(srv, now); err == nil {
		t.Error("a server certificate verified as a node's")
	}
	if pki.Serial(node) == pki.Serial(srv) {
		t.Error("two certificates share a serial")
	}
}

// TestVerifyNodeRefusesSubCA: a node certificate under a sub-CA of a
// configured CA that allows one passes a TLS handshake, which takes the
// intermediates the client sends, but not VerifyNode, which takes only
// what the CA signed itself. That is why the agent API verifies a
// presented certificate again: its serial, machine and EK are not secret.
func TestVerifyNodeRefusesSubCA(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	caCert, caKey := newCA(t, "operator CA", nil, nil)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(caKey)
	certPath, keyPath := filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile)
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.Load(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sub, subKey := newCA(t, "another service's CA", caCert, caKey)
	issued, err := ca.IssueNode(subKey.Public(), machineID, ekFP, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A copy of a node certificate the CA issued, signed by the sub-CA.
	forged := &x509.Certificate{SerialNumber: issued.SerialNumber, Subject: issued.Subject, URIs: issued.URIs,
		NotBefore: issued.NotBefore, NotAfter: issued.NotAfter, KeyUsage: issued.KeyUsage, ExtKeyUsage: issued.ExtKeyUsage}
	der, err := x509.CreateCertificate(rand.Reader, forged, sub, subKey.Public(), subKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)

	intermediates := x509.NewCertPool()
	intermediates.AddCert(sub)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the handshake's verification refused the sub-CA's certificate (%v): this test no longer shows the difference", err)
	}
	if pki.Serial(leaf) != pki.Serial(issued) {
		t.Fatalf("serial %s, want the issued %s", pki.Serial(leaf), pki.Serial(issued))
	}
	if _, _, err := ca.VerifyNode(leaf, now); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("VerifyNode of a certificate the CA did not sign itself: %v; want unknown authority", err)
	}
}

// newCA makes a CA certificate, with no path length limit, signed by
// parent (nil: itself).
func newCA(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
