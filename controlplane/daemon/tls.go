package daemon

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/listener"
	"github.com/attestation/attestation/controlplane/pki"
)

// loadCA returns the daemon's CA: the one the config names, or the one
// in the data directory, created on first start.
func loadCA(cfg config.Config, dataDir string, log *slog.Logger) (*pki.CA, error) {
	if cfg.CACert != "" {
		ca, err := pki.Load(cfg.CACert, cfg.CAKey)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Origin("ca_cert"), err)
		}
		log.Info("CA", "cert", cfg.CACert, "key", cfg.CAKey, "created", false, "subject", ca.Certificate().Subject.String(),
			"expires", ca.Certificate().NotAfter.UTC().Format(time.RFC3339))
		return ca, nil
	}
	ca, created, err := pki.LoadOrCreate(dataDir)
	if err != nil {
		return nil, err
	}
	log.Info("CA", "cert", filepath.Join(dataDir, pki.CertFile), "key", filepath.Join(dataDir, pki.KeyFile), "created", created,
		"subject", ca.Certificate().Subject.String(), "expires", ca.Certificate().NotAfter.UTC().Format(time.RFC3339))
	return ca, nil
}

// apiTLS returns the API's TLS configuration and the reloader of its
// certificate (to run), or nil and nil when TLS is off. With
// tls_self_signed the certificate is one ca issues into the data
// directory for hosts, again when it nears its end.
func apiTLS(cfg config.Config, dataDir string, ca *pki.CA, hosts []string, log *slog.Logger) (*tls.Config, *listener.Reloader, error) {
	certPath, keyPath, setting := cfg.TLSCert, cfg.TLSKey, "tls_cert"
	switch {
	case cfg.TLSSelfSigned:
		certPath, keyPath, setting = filepath.Join(dataDir, listener.CertFile), filepath.Join(dataDir, listener.KeyFile), "tls_self_signed"
		issued, err := listener.Issue(ca, certPath, keyPath, hosts, time.Now())
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", cfg.Origin(setting), err)
		}
		if issued {
			log.Info("issued a TLS certificate from the CA (tls_self_signed, for development)", "cert", certPath, "key", keyPath, "hosts", strings.Join(hosts, ","))
		}
	case cfg.TLSCert == "":
		return nil, nil, nil
	}
	r, err := listener.NewReloader(certPath, keyPath, log.With("component", "tls"))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfg.Origin(setting), err)
	}
	return listener.Config(r.GetCertificate, ca.Pool()), r, nil
}

// selfSignedHosts are the names a development certificate is issued for:
// localhost and loopback, the listen address unless a wildcard, and the
// public URL's host.
func selfSignedHosts(listen net.Addr, publicURL string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	add := func(h string) {
		if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) || slices.Contains(hosts, h) {
			return
		}
		hosts = append(hosts, h)
	}
	if h, _, err := net.SplitHostPort(listen.String()); err == nil {
		add(h)
	}
	if u, err := url.Parse(publicURL); err == nil {
		add(u.Hostname())
	}
	return hosts
}

// warnPlainPublicURL warns when agents are told an http:// URL that the
// daemon, serving TLS, refuses to peers off its machine.
func warnPlainPublicURL(publicURL string, log *slog.Logger) {
	u, err := url.Parse(publicURL)
	if err != nil || u.Scheme != "http" {
		return
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() == "localhost" || (ip != nil && ip.IsLoopback()) {
		return
	}
	log.Warn("public_url is http:// but the API serves TLS, and plain HTTP only to loopback clients: agents will be refused; set an https:// public_url",
		"public_url", publicURL)
}
