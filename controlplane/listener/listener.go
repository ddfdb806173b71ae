// Package listener is the API's listener when it serves TLS: one port
// where a connection that opens with a TLS handshake is served TLS
// (HTTP/2 for gRPC clients, or HTTP/1.1) and a plaintext one (HTTP/1.1,
// h2c) only when it comes from loopback, for the CLI on the daemon's own
// machine and health probes. Its certificate comes from a Reloader, read
// again on SIGHUP and when the files change, without dropping a
// connection; in development it is one the daemon's CA issues (Issue).
package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/attestation/attestation/controlplane/logging"
)

// Config is the API's TLS configuration: TLS 1.2 and later, ALPN h2 (gRPC
// needs HTTP/2) and http/1.1, and the certificate of getCertificate, asked
// for at every handshake so that a reloaded one serves the next
// connection while the open ones keep theirs.
//
// A client certificate is asked for but not required
// (tls.VerifyClientCertIfGiven): one that is presented must chain to
// clientCAs, the daemon CA's pool, which issues the nodes' certificates.
// A handler reads an agent's verified certificate in
// r.TLS.PeerCertificates (r.TLS.VerifiedChains) to authenticate it by it
// (mTLS); an operator's CLI, a browser or a health probe presents none
// and is served as before. A presented certificate the CA did not issue,
// or an expired one, fails the handshake.
func Config(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: getCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      clientCAs,
	}
}

// PeekTimeout is how long a new connection may take to send its first
// byte, the one that says whether it speaks TLS.
const PeekTimeout = 10 * time.Second

// recordTypeHandshake is the first byte of a TLS connection: the record
// type of the ClientHello.
const recordTypeHandshake = 0x16

// refusal is the answer to plaintext from a peer that is not loopback.
const refusal = "This port serves the attestation API over TLS: use https://. Plain HTTP is for loopback clients only.\n"

// Listener sorts the connections of an inner listener: TLS ones are
// returned as *tls.Conn (so that http.Server negotiates HTTP/2 and fills
// in r.TLS), plaintext ones from loopback as they are, and plaintext ones
// from elsewhere are answered 400 and closed. The first byte is read in a
// goroutine of each connection, never in Accept, so a client that sends
// nothing holds up no other.
type Listener struct {
	inner  net.Listener
	config *tls.Config
	log    *slog.Logger

	conns     chan net.Conn
	errs      chan error
	done      chan struct{}
	start     sync.Once
	closeOnce sync.Once

	mu sync.Mutex
	// pending are the connections whose first byte is awaited, closed
	// with the listener.
	pending map[net.Conn]struct{}
	refused logging.Every
}

var _ net.Listener = (*Listener)(nil)

// New returns a Listener over inner serving TLS with config.
func New(inner net.Listener, config *tls.Config, log *slog.Logger) *Listener {
	return &Listener{
		inner:   inner,
		config:  config,
		log:     log,
		conns:   make(chan net.Conn),
		errs:    make(chan error),
		done:    make(chan struct{}),
		pending: map[net.Conn]struct{}{},
		refused: logging.Every{Interval: 10 * time.Second},
	}
}

// Accept returns the next connection sorted: a *tls.Conn, or a plaintext
// one from loopback.
func (l *Listener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, fmt.Errorf("accept: %w", net.ErrClosed)
	}
}

// Close stops accepting and closes the connections not yet sorted.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.inner.Close()
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
	})
	return err
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// acceptLoop accepts until the inner listener is closed, passing its
// errors on to Accept (http.Server retries the temporary ones).
func (l *Listener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// As net/http does: do not spin on a persistent error
			// (out of file descriptors).
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		go l.sort(c)
	}
}

// sort reads c's first byte and hands c to Accept as what it speaks, or
// refuses it.
func (l *Listener) sort(c net.Conn) {
	if !l.track(c) {
		c.Close()
		return
	}
	first, err := peek(c, PeekTimeout)
	l.untrack(c)
	if err != nil {
		c.Close() // nothing sent in time, or gone
		return
	}
	pc := &peekedConn{Conn: c, first: []byte{first}}
	var out net.Conn
	switch classify(first, c.RemoteAddr()) {
	case serveTLS:
		out = tls.Server(pc, l.config)
	case servePlain:
		out = pc
	default:
		l.refuse(pc)
		return
	}
	select {
	case l.conns <- out:
	case <-l.done:
		out.Close()
	}
}

func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return false
	default:
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *Listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

// peek reads c's first byte within timeout, leaving no deadline behind.
func peek(c net.Conn, timeout time.Duration) (byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return b[0], c.SetReadDeadline(time.Time{})
}

// verdict is what becomes of a connection.
type verdict int

const (
	serveTLS verdict = iota
	servePlain
	refusePlain
)

func (v verdict) String() string {
	return [...]string{"TLS", "plaintext", "refused"}[v]
}

// classify decides by a connection's first byte and its peer: a TLS
// handshake is served from anywhere, plaintext from loopback only.
func classify(first byte, peer net.Addr) verdict {
	switch {
	case first == recordTypeHandshake:
		return serveTLS
	case isLoopback(peer):
		return servePlain
	}
	return refusePlain
}

// isLoopback reports whether a is a loopback address (127.0.0.0/8, ::1,
// or ::ffff:127.0.0.1).
func isLoopback(a net.Addr) bool {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case nil:
		return false
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return false
		}
		ip = ap.Addr()
	}
	return ip.Unmap().IsLoopback()
}

// refuse answers plaintext from a peer that is not loopback with a 400
// saying to use https, and closes the connection.
func (l *Listener) refuse(c *peekedConn) {
	defer c.Close()
	if skipped, ok := l.refused.Allow(time.Now()); ok {
		l.log.Warn("plaintext connection refused: only loopback clients may use http://, others must use https://",
			"peer", c.RemoteAddr().String(), "refused_since_last_line", skipped)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(refusal), refusal)
	// Read what the client sent before closing, so that the kernel does
	// not answer its unread request with a reset that loses the 400.
	if c.CloseWrite() == nil {
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}
}

// peekedConn is a connection whose first byte was read to sort it: Read
// returns it first.
type peekedConn struct {
	net.Conn
	first []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite shuts the sending side (http.Server does it before closing
// a plaintext connection whose request it did not read whole).
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
