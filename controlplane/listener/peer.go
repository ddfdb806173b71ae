package listener

import (
	"context"
	"crypto/x509"
	"net/http"
)

type peerKey struct{}

// peer is what a request's connection says of its client.
type peer struct {
	tls  bool
	cert *x509.Certificate
}

// WithPeer puts into each request's context whether it came over TLS and
// the client certificate the handshake verified (against the daemon's CA),
// for PeerCertificate and OverTLS. The agent API is served through it.
func WithPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := peer{tls: r.TLS != nil}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			p.cert = r.TLS.VerifiedChains[0][0]
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, p)))
	})
}

// PeerCertificate is the verified client certificate of the request whose
// context ctx is, or nil.
func PeerCertificate(ctx context.Context) *x509.Certificate {
	p, _ := ctx.Value(peerKey{}).(peer)
	return p.cert
}

// OverTLS reports whether the request whose context ctx is came over TLS.
func OverTLS(ctx context.Context) bool {
	p, _ := ctx.Value(peerKey{}).(peer)
	return p.tls
}
