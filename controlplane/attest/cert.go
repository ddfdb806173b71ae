package attest

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// oidSubjectAltName is the extension EK certificates mark critical (their
// subject is empty, so the TPM's identity lives in the SAN), which Go's
// verifier does not handle when the SAN holds only a directory name.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCertificate parses the DER EK certificate der, requires its
// public key to equal ek, and verifies its chain to roots through
// intermediates (which may be nil) at now (the current time when zero). It
// returns the verified certificate.
func VerifyEKCertificate(der []byte, ek crypto.PublicKey, roots, intermediates *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, errors.New("verify EK certificate: none presented")
	}
	if roots == nil {
		return nil, errors.New("verify EK certificate: no roots configured")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("verify EK certificate: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, ek) {
		return nil, errors.New("verify EK certificate: the certificate is for another key than the EK")
	}
	// Remove only the SAN from the unhandled critical extensions; any other
	// one still fails verification.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions),
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(oidSubjectAltName) })
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		// EK certificates carry the TCG EK certificate purpose, or none.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("verify EK certificate: %w", err)
	}
	return cert, nil
}

// LoadRoots reads every certificate in the files under dir (recursively)
// whose names end in .pem, .crt, .cer or .der; each file holds PEM
// certificates or DER certificates. Self-signed certificates become roots,
// the others intermediates. A file in those formats that holds no
// certificate is an error, and so is a directory without any root.
func LoadRoots(dir string) (roots, intermediates *x509.CertPool, err error) {
	roots, intermediates = x509.NewCertPool(), x509.NewCertPool()
	nroots := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".pem", ".crt", ".cer", ".der":
		default:
			return nil
		}
		if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		certs, err := parseCertificates(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, c := range certs {
			if isSelfSigned(c) {
				roots.AddCert(c)
				nroots++
			} else {
				intermediates.AddCert(c)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load EK roots from %s: %w", dir, err)
	}
	if nroots == 0 {
		return nil, nil, fmt.Errorf("load EK roots from %s: no self-signed root certificate", dir)
	}
	return roots, intermediates, nil
}

func parseCertificates(b []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		certs, err := x509.ParseCertificates(b)
		if err != nil {
			return nil, err
		}
		if len(certs) == 0 {
			return nil, errors.New("no certificate")
		}
		return certs, nil
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// Mode says which EKs the control plane accepts.
type Mode string

const (
	// ModeVerify requires an EK certificate that chains to the roots.
	ModeVerify Mode = "verify"
	// ModeAllowlist accepts exactly the EKs whose fingerprints are listed.
	ModeAllowlist Mode = "allowlist"
	// ModeAny accepts every EK. For development only.
	ModeAny Mode = "any"
)

// ParseMode parses "verify", "allowlist" or "any".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeVerify, ModeAllowlist, ModeAny:
		return m, nil
	}
	return "", fmt.Errorf("EK policy %q: want %q, %q or %q", s, ModeVerify, ModeAllowlist, ModeAny)
}

// Policy decides which EKs may attest.
type Policy struct {
	Mode Mode
	// Roots and Intermediates verify EK certificates in ModeVerify (see
	// LoadRoots).
	Roots, Intermediates *x509.CertPool
	// Allowlist holds the accepted EK fingerprints (lowercase hex, as
	// Fingerprint returns them) in ModeAllowlist.
	Allowlist map[string]bool
	// Now is the time certificates are checked at; zero means now.
	Now time.Time
}

// CheckEK applies the policy to an EK (as ParseEKPublic returns it) and the
// DER certificate the agent presented, if any.
func (p Policy) CheckEK(ek crypto.PublicKey, certDER []byte) error {
	switch p.Mode {
	case ModeAny:
		return nil
	case ModeAllowlist:
		fp, err := Fingerprint(ek)
		if err != nil {
			return err
		}
		if !p.Allowlist[fp] {
			return fmt.Errorf("EK %s is not on the allowlist", fp)
		}
		return nil
	case ModeVerify:
		_, err := VerifyEKCertificate(certDER, ek, p.Roots, p.Intermediates, p.Now)
		return err
	default:
		return fmt.Errorf("EK policy: unknown mode %q", p.Mode)
	}
}
