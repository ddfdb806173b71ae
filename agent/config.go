package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/attestation/attestation/agent/tpm"
)

// Defaults.
const (
	DefaultConfigOut         = "/run/attestation/config"
	DefaultPCRs              = "0-7"
	DefaultHeartbeatInterval = 30 * time.Second
)

// Config is what Run needs. The zero value of every field but Server has a
// default.
type Config struct {
	// Server is the control plane's base URL (http:// or https://).
	Server string
	// TPM is a tpm.Open spec (default /dev/tpmrm0).
	TPM string
	// RequireTPM: without a TPM, do not register (tpm_available=false):
	// Run fails (and RunInit runs it again until one appears).
	RequireTPM bool
	// CAFile is a PEM bundle of CAs trusted for an https Server (default:
	// the system's roots).
	CAFile string
	// ConfigOut is where the one-time config is written.
	ConfigOut string
	// PCRs are quoted when the control plane names none.
	PCRs []int
	// HeartbeatInterval is the time between heartbeats, spread ±20%.
	HeartbeatInterval time.Duration
	// Once makes Run return after writing the config, without heartbeats.
	Once bool

	// SysRoot is prefixed to /sys when reading hardware (tests).
	SysRoot string
	// EventLog is the TCG event log's path (default tpm.EventLogPath).
	EventLog string
	// Retry spaces out attempts after transient failures (control plane
	// unreachable): default 1 s to 30 s.
	Retry Backoff
	// SlowRetry spaces out attempts the control plane refused (for example
	// a decommissioned machine): default 30 s to 5 min.
	SlowRetry Backoff
	// HTTPClient overrides the client built from CAFile.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

func (c *Config) setDefaults() {
	if c.TPM == "" {
		c.TPM = tpm.DefaultDevice
	}
	if c.ConfigOut == "" {
		c.ConfigOut = DefaultConfigOut
	}
	if len(c.PCRs) == 0 {
		c.PCRs, _ = ParsePCRs(DefaultPCRs)
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.Retry == (Backoff{}) {
		c.Retry = Backoff{Min: time.Second, Max: 30 * time.Second}
	}
	if c.SlowRetry == (Backoff{}) {
		c.SlowRetry = Backoff{Min: 30 * time.Second, Max: 5 * time.Minute}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports what is wrong with c, after defaults, without touching
// the network or the TPM.
func (c Config) Validate() error {
	c.setDefaults()
	_, err := c.client(nil)
	return err
}

func (c Config) validate() error {
	if c.Server == "" {
		return errors.New("no control plane URL: set --server (or ATTESTATION_SERVER, or attestation.url= on the kernel command line)")
	}
	u, err := url.Parse(c.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("control plane URL %q: want http://HOST[:PORT] or https://HOST[:PORT]", c.Server)
	}
	if err := tpm.CheckSpec(c.TPM); err != nil {
		return err
	}
	for _, p := range c.PCRs {
		if p < 0 || p > tpm.MaxPCR {
			return fmt.Errorf("PCR %d out of range 0-%d", p, tpm.MaxPCR)
		}
	}
	if c.HeartbeatInterval < time.Second {
		return fmt.Errorf("heartbeat interval %s: at least 1s", c.HeartbeatInterval)
	}
	if c.Retry.Min <= 0 || c.Retry.Max < c.Retry.Min || c.SlowRetry.Min <= 0 || c.SlowRetry.Max < c.SlowRetry.Min {
		return errors.New("retry backoff: want 0 < Min <= Max")
	}
	return nil
}

// client validates c and returns the HTTP client for the control plane.
// A control plane that asks for a client certificate gets the one
// clientCert returns (nil: none), the node certificate.
func (c Config) client(clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*http.Client, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.HTTPClient != nil {
		return c.HTTPClient, nil
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: clientCert}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read CA bundle %s: no PEM certificate in it", c.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{
		Timeout: 10 * time.Second,
		// Notice a control plane that vanished (power loss, cable) while
		// the approval stream is idle.
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		ExpectContinueTimeout: time.Second,
	}}, nil
}
