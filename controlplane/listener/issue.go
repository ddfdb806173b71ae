package listener

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/attestation/attestation/controlplane/pki"
	"github.com/attestation/attestation/internal/atomicfile"
)

// The files of the certificate Issue writes into the data directory.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// RenewBefore is how long before it expires Issue replaces a certificate.
const RenewBefore = 30 * 24 * time.Hour

// issuedLifetime is how long an issued certificate is valid (no longer
// than the CA).
const issuedLifetime = 365 * 24 * time.Hour

// Issue makes sure certPath and keyPath hold a TLS server certificate of
// ca for every one of hosts, and its key: it keeps a pair that ca issued,
// that names them all and that is valid for longer than RenewBefore, and
// otherwise issues a new one (ECDSA P-256, a year, the key mode 0600).
// issued says whether it did. The certificate file holds the CA's
// certificate after the server's when the CA is not a root, so that
// clients trusting the root above it can build the chain.
func Issue(ca *pki.CA, certPath, keyPath string, hosts []string, now time.Time) (issued bool, err error) {
	if current(ca, certPath, keyPath, hosts, now) {
		return false, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("issue TLS certificate: generate key: %w", err)
	}
	cert, err := ca.IssueServer(key.Public(), hosts, now, issuedLifetime)
	if err != nil {
		return false, fmt.Errorf("issue TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, fmt.Errorf("issue TLS certificate: encode key: %w", err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if caCert := ca.Certificate(); !bytes.Equal(caCert.RawIssuer, caCert.RawSubject) {
		chain = append(chain, ca.CertPEM()...)
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return false, fmt.Errorf("issue TLS certificate: key: %w", err)
	}
	if err := atomicfile.Write(certPath, chain, 0o644); err != nil {
		return false, fmt.Errorf("issue TLS certificate: %w", err)
	}
	return true, nil
}

// current reports whether the pair at certPath and keyPath can go on
// serving hosts: ca issued it, it names them all, and it is valid for
// longer than RenewBefore.
func current(ca *pki.CA, certPath, keyPath string, hosts []string, now time.Time) bool {
	cert, err := ReadPair(certPath, keyPath, now)
	if err != nil {
		return false
	}
	leaf := cert.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return false
	}
	if leaf.NotAfter.Sub(now) <= RenewBefore {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}
