// Package pki is the daemon's certificate authority: created in the data
// directory on first start (or given as files), it issues the API's TLS
// server certificate in development (--tls-self-signed) and the nodes'
// client certificates, whose keys never leave their TPMs. Agents pin its
// certificate (attestation.ca=).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/attestation/attestation/internal/atomicfile"
)

// The files of a CA created in the data directory.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// caLifetime is how long a created CA is valid.
const caLifetime = 10 * 365 * 24 * time.Hour

// backdate is how far before now certificates start, for clocks that lag.
const backdate = 5 * time.Minute

// URI prefixes of a node certificate's SANs.
const (
	ekURIPrefix      = "urn:attestation:ek:"
	machineURIPrefix = "urn:attestation:machine:"
)

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	pool    *x509.CertPool
}

// LoadOrCreate returns the CA in dir (CertFile, KeyFile), creating one
// (ECDSA P-256, ten years, the key mode 0600) when neither file exists.
// created says whether it did.
func LoadOrCreate(dir string) (ca *CA, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := Load(certPath, keyPath)
		return ca, false, err
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case errors.Is(certErr, fs.ErrNotExist):
		return nil, false, fmt.Errorf("CA: %s exists but %s does not: restore it, or remove both to create a new CA (every node certificate then needs reissuing)", keyPath, certPath)
	case errors.Is(keyErr, fs.ErrNotExist):
		return nil, false, fmt.Errorf("CA: %s exists but %s does not: restore it, or remove both to create a new CA (every node certificate then needs reissuing)", certPath, keyPath)
	default:
		return nil, false, fmt.Errorf("CA: %w", errors.Join(certErr, keyErr))
	}
	ca, err = create(time.Now())
	if err != nil {
		return nil, false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, false, fmt.Errorf("CA: encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, fmt.Errorf("CA: write key: %w", err)
	}
	if err := atomicfile.Write(certPath, ca.certPEM, 0o644); err != nil {
		return nil, false, fmt.Errorf("CA: write certificate: %w", err)
	}
	return ca, true, nil
}

// create makes a new CA.
func create(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "attestation CA", Organization: []string{"attestation"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("CA: create certificate: %w", err)
	}
	return newCA(der, key)
}

func newCA(der []byte, key crypto.Signer) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key, pool: pool}, nil
}

// Load reads a CA from a PEM certificate and a PEM private key (PKCS #8,
// SEC 1 EC or PKCS #1 RSA). The key file must not be readable by others.
func Load(certPath, keyPath string) (*CA, error) {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("CA key %s is readable by others (mode %o): chmod 600 it", keyPath, fi.Mode().Perm())
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("CA certificate %s: no PEM CERTIFICATE block", certPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	ca, err := newCA(block.Bytes, key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	if !ca.cert.IsCA || ca.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %s: not a CA certificate (basic constraints CA and key usage certSign)", certPath)
	}
	if !publicKeysEqual(ca.cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("CA key %s does not match the certificate %s", keyPath, certPath)
	}
	return ca, nil
}

// ParseKey reads a PEM private key: PKCS #8, SEC 1 EC or PKCS #1 RSA.
func ParseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("a PEM %q block, not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T key cannot sign", key)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// Certificate is the CA's certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// CertPEM is the CA's certificate in PEM, what agents pin.
func (c *CA) CertPEM() []byte { return c.certPEM }

// Pool holds the CA's certificate, to verify what it issued.
func (c *CA) Pool() *x509.CertPool { return c.pool }

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// issue signs tmpl for pub, filling in its serial and validity.
func (c *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(c.cert.NotAfter) {
		tmpl.NotAfter = c.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// IssueServer issues a TLS server certificate for hosts (DNS names or IP
// addresses) to pub.
func (c *CA) IssueServer(pub crypto.PublicKey, hosts []string, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	if len(hosts) == 0 {
		return nil, errors.New("issue server certificate: no host names")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return c.issue(tmpl, pub, now, lifetime)
}

// IssueNode issues a node's client certificate to pub: its SANs are the
// URIs urn:attestation:ek:<fingerprint> and urn:attestation:machine:<id>,
// its subject the machine ID.
func (c *CA) IssueNode(pub crypto.PublicKey, machineID, ekFingerprint string, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	ek, err := url.Parse(ekURIPrefix + ekFingerprint)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate: %w", err)
	}
	machine, err := url.Parse(machineURIPrefix + machineID)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: machineID, Organization: []string{"attestation nodes"}},
		URIs:        []*url.URL{ek, machine},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return c.issue(tmpl, pub, now, lifetime)
}

// VerifyNode checks that cert is a node certificate this CA issued, valid
// at now, and returns the machine ID and EK fingerprint it names.
func (c *CA) VerifyNode(cert *x509.Certificate, now time.Time) (machineID, ekFingerprint string, err error) {
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", "", fmt.Errorf("node certificate: %w", err)
	}
	return NodeIdentity(cert)
}

// NodeIdentity reads the machine ID and EK fingerprint of a node
// certificate's SANs (it does not verify the certificate).
func NodeIdentity(cert *x509.Certificate) (machineID, ekFingerprint string, err error) {
	for _, u := range cert.URIs {
		s := u.String()
		if v, ok := strings.CutPrefix(s, ekURIPrefix); ok {
			ekFingerprint = v
		}
		if v, ok := strings.CutPrefix(s, machineURIPrefix); ok {
			machineID = v
		}
	}
	if machineID == "" || ekFingerprint == "" {
		return "", "", errors.New("node certificate: no urn:attestation:machine: and urn:attestation:ek: URIs")
	}
	return machineID, ekFingerprint, nil
}

// Serial formats a certificate's serial number as events and logs show it:
// lower-case hex.
func Serial(cert *x509.Certificate) string { return fmt.Sprintf("%x", cert.SerialNumber) }
