package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
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
