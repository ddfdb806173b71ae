package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// nodeCert holds the machine's node certificate: a client certificate for
// the node key, which the TPM holds, issued after attestation and renewed
// at two thirds of its life. The HTTP client presents it to a control
// plane that asks for one (clientCertificate).
type nodeCert struct {
	mu   sync.Mutex
	cert *tls.Certificate
}

func (c *nodeCert) get() *tls.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert
}

func (c *nodeCert) set(cert *tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert = cert
}

// clientCertificate is the TLS client's GetClientCertificate: the node
// certificate, or none before there is one.
func (c *nodeCert) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cert := c.get(); cert != nil {
		return cert, nil
	}
	return &tls.Certificate{}, nil
}

// refusingRoundTripper drops the node certificate when the control plane
// refuses it in the TLS handshake (a CA it no longer trusts after a
// rotation, an expired certificate): the next connection presents none,
// the agent attests again, and gets a certificate of the new CA.
type refusingRoundTripper struct {
	rt   http.RoundTripper
	cert *nodeCert
	log  *slog.Logger
}

func (r refusingRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.rt.RoundTrip(req)
	if err != nil && r.cert.get() != nil && certificateRefused(err) {
		r.cert.set(nil)
		r.CloseIdleConnections()
		r.log.Warn("node certificate refused by the control plane: dropped; attesting again will get a new one", "err", err)
	}
	return resp, err
}

// CloseIdleConnections closes the transport's idle connections (what
// http.Client.CloseIdleConnections calls).
func (r refusingRoundTripper) CloseIdleConnections() {
	if c, ok := r.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// certificateRefused reports whether err is the control plane's TLS alert
// about the client certificate.
func certificateRefused(err error) bool {
	msg := err.Error()
	if !strings.Contains(msg, "remote error: tls: ") {
		return false
	}
	for _, alert := range []string{"bad certificate", "unknown certificate authority", "expired certificate", "revoked certificate", "certificate required"} {
		if strings.Contains(msg, alert) {
			return true
		}
	}
	return false
}

// tlsCertificate is a TLS client certificate for leaf, whose private key
// is key: the node key, which signs SHA-256 digests only.
func tlsCertificate(leaf *x509.Certificate, key crypto.Signer) *tls.Certificate {
	return &tls.Certificate{
		Certificate:                  [][]byte{leaf.Raw},
		PrivateKey:                   key,
		Leaf:                         leaf,
		SupportedSignatureAlgorithms: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
	}
}

// minRenewWait keeps a certificate whose renewal time has passed (a
// clock that lags the control plane's) from being requested in a loop.
const minRenewWait = time.Second

// renewCertificates gets the node certificate and renews it until ctx is
// done: each time the node key is certified anew by the AK, for a new
// CSR. A control plane without a CA ends it; a refusal is retried slowly,
// a failure quickly, a session being replaced as soon as there is a new
// one.
func (a *agent) renewCertificates(ctx context.Context, first time.Duration) {
	fast, slow := retrier{b: a.cfg.Retry}, retrier{b: a.cfg.SlowRetry}
	if first > 0 && !sleep(ctx, first) {
		return
	}
	for {
		wait, err := a.requestCertificate(ctx)
		if ctx.Err() != nil {
			return
		}
		switch code := connect.CodeOf(err); {
		case err == nil:
			fast.reset()
			slow.reset()
		case code == connect.CodeUnimplemented:
			a.log.Warn("no node certificate: the control plane issues none", "err", err)
			return
		case code == connect.CodeUnauthenticated:
			// The session was replaced or ended; the main loop attests
			// again.
			wait = fast.next()
			a.log.Debug("certificate request waits for a session", "err", err, "retry_in", wait.Round(time.Millisecond))
		case code == connect.CodeFailedPrecondition || code == connect.CodePermissionDenied || code == connect.CodeInvalidArgument:
			wait = slow.next()
			a.log.Error("certificate renewal refused", "machine", a.machine(), "code", code.String(), "err", err, "retry_in", wait.Round(time.Millisecond))
		default:
			wait = fast.next()
			a.log.Warn("certificate request failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// firstCertAttempts bounds the tries at the first certificate before the
// agent goes on without it (renewCertificates keeps trying).
const firstCertAttempts = 3

// firstCertificate gets the node certificate right after attestation and
// returns how long until it is to be renewed; 0 when it could not (a
// control plane without a CA, or failures: renewCertificates tries on).
func (a *agent) firstCertificate(ctx context.Context) time.Duration {
	r := retrier{b: a.cfg.Retry}
	for range firstCertAttempts {
		wait, err := a.requestCertificate(ctx)
		if err == nil {
			return wait
		}
		code := connect.CodeOf(err)
		if code == connect.CodeUnimplemented || code == connect.CodeUnauthenticated || ctx.Err() != nil {
			return 0
		}
		a.log.Warn("certificate request failed", "err", err)
		if !sleep(ctx, r.next()) {
			return 0
		}
	}
	return 0
}

// certifyAgain gets a new certificate for a new session when the one
// before was refused and dropped (the control plane's CA changed), before
// anything else is called; renewCertificates keeps its schedule.
func (a *agent) certifyAgain(ctx context.Context) {
	if a.renewing && a.cert.get() == nil {
		a.firstCertificate(ctx)
	}
}

// requestCertificate asks for a node certificate for a freshly certified
// CSR and keeps it; it returns how long until it is to be renewed.
func (a *agent) requestCertificate(ctx context.Context) (time.Duration, error) {
	token, machineID := a.session()
	key, err := a.tpm.NodeKey()
	if err != nil {
		return 0, err
	}
	csr, err := key.CertificateRequest(machineID)
	if err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := connect.NewRequest(&attestationv1.IssueCertificateRequest{
		Csr:              csr.CSR,
		KeyPublic:        csr.KeyPublic,
		CertifyInfo:      csr.CertifyInfo,
		CertifySignature: csr.CertifySignature,
	})
	req.Header().Set("Authorization", "Bearer "+token)
	res, err := a.api.IssueCertificate(cctx, req)
	if err != nil {
		return 0, fmt.Errorf("issue certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(res.Msg.GetCertificate())
	if err != nil {
		return 0, fmt.Errorf("issue certificate: the control plane sent a certificate that does not parse: %w", err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return 0, errors.New("issue certificate: the control plane sent a certificate for another key")
	}
	renewed := a.cert.get() != nil
	a.cert.set(tlsCertificate(leaf, key))
	// Connections made before present no certificate, or the one before:
	// the next calls make new ones, which present this one.
	a.http.CloseIdleConnections()
	renewAfter := res.Msg.GetRenewAfter().AsTime()
	msg := "certificate issued"
	if renewed {
		msg = "certificate renewed"
	}
	a.log.Info(msg, "machine", machineID, "serial", res.Msg.GetSerial(),
		"not_after", leaf.NotAfter.Format(time.RFC3339), "renew_after", renewAfter.Format(time.RFC3339))
	return max(time.Until(renewAfter), minRenewWait), nil
}
