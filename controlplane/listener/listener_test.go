package listener

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/controlplane/pki"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		first byte
		peer  net.Addr
		want  verdict
	}{
		{"TLS from afar", 0x16, &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}, serveTLS},
		{"TLS from loopback", 0x16, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 40000}, serveTLS},
		{"HTTP/1.1 from loopback", 'G', &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 40000}, servePlain},
		{"HTTP/1.1 from 127.0.0.2", 'G', &net.TCPAddr{IP: net.ParseIP("127.0.0.2"), Port: 40000}, servePlain},
		{"h2c from ::1", 'P', &net.TCPAddr{IP: net.ParseIP("::1"), Port: 40000}, servePlain},
		{"HTTP/1.1 from mapped loopback", 'G', &net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 40000}, servePlain},
		{"HTTP/1.1 from afar", 'G', &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}, refusePlain},
		{"h2c from afar", 'P', &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 40000}, refusePlain},
		{"HTTP/1.1 from the wildcard", 'G', &net.TCPAddr{IP: net.IPv4zero, Port: 40000}, refusePlain},
		{"other address type", 'G', fakeAddr("127.0.0.1:40000"), servePlain},
		{"unparsable address", 'G', fakeAddr("somewhere"), refusePlain},
		{"no address", 'G', nil, refusePlain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.first, tc.peer); got != tc.want {
				t.Errorf("classify(%#x, %v) = %v, want %v", tc.first, tc.peer, got, tc.want)
			}
		})
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// remoteConn is a connection that says it comes from peer.
type remoteConn struct {
	net.Conn
	peer net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.peer }

// TestRefusePlaintextFromAfar: plaintext from a peer that is not
// loopback is answered 400, saying to use https, closed, and logged
// naming the peer; it never reaches Accept.
func TestRefusePlaintextFromAfar(t *testing.T) {
	// Read once the answer is: the line is logged before it is written.
	var logs bytes.Buffer
	l := New(nil, &tls.Config{}, slog.New(slog.NewTextHandler(&logs, nil)))
	server, client := net.Pipe()
	defer client.Close()
	go l.sort(remoteConn{Conn: server, peer: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}})
	go io.WriteString(client, "GET /api/v1/machines HTTP/1.1\r\nHost: attest.example\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "use https://") {
		t.Errorf("got %d %q, want 400 saying to use https://", resp.StatusCode, body)
	}
	want := `level=WARN msg="plaintext connection refused: only loopback clients may use http://, others must use https://" peer=192.0.2.7:40000`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("logs lack\n%s\ngot\n%s", want, logs.String())
	}
	select {
	case c := <-l.conns:
		t.Errorf("a refused connection reached Accept: %v", c)
	default:
	}
}

// testCA is a CA in a temporary directory.
func testCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, _, err := pki.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// serve serves on a Listener over loopback, with the certificate Issue
// writes for 127.0.0.1, and returns its address and a client trusting ca.
func serve(t *testing.T, ca *pki.CA) (*Listener, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if _, err := Issue(ca, certPath, keyPath, []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	r, err := NewReloader(certPath, keyPath, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(inner, Config(r.GetCertificate, ca.Pool()), slog.New(slog.DiscardHandler))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
			if r.TLS != nil {
				io.WriteString(w, " TLS")
			}
		}),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l, &tls.Config{RootCAs: ca.Pool()}
}

// TestListener: one port serves TLS with HTTP/2 and HTTP/1.1 and, from
// loopback, plaintext HTTP/1.1 and h2c.
func TestListener(t *testing.T) {
	l, clientTLS := serve(t, testCA(t))
	addr := l.Addr().String()
	get := func(t *testing.T, tr http.RoundTripper, url string) string {
		t.Helper()
		resp, err := (&http.Client{Transport: tr}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	h1tls := &http.Transport{TLSClientConfig: clientTLS.Clone()}
	h2tls := &http.Transport{TLSClientConfig: clientTLS.Clone(), ForceAttemptHTTP2: true}
	for _, tc := range []struct {
		name string
		tr   *http.Transport
		url  string
		want string
	}{
		{"HTTP/2 over TLS", h2tls, "https://" + addr, "HTTP/2.0 TLS"},
		{"HTTP/1.1 over TLS", h1tls, "https://" + addr, "HTTP/1.1 TLS"},
		{"plain HTTP/1.1", &http.Transport{}, "http://" + addr, "HTTP/1.1"},
		{"h2c", h2c, "http://" + addr, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.tr.CloseIdleConnections()
			if got := get(t, tc.tr, tc.url); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestListenerClose: a connection that has sent nothing is closed with
// the listener, and Accept then says the listener is closed.
func TestListenerClose(t *testing.T) {
	l, _ := serve(t, testCA(t))
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond) // accepted, its first byte awaited
	l.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read from a connection the closed listener held: got %v, want EOF", err)
	}
	if _, err := l.Accept(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Accept after Close: got %v, want closed", err)
	}
}

// TestIssue: a pair is issued when there is none, kept while it is the
// CA's, names every host and is far from its end, and issued again when
// a host is new, the CA is another, or a file is gone.
func TestIssue(t *testing.T) {
	ca := testCA(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	now := time.Now()
	serial := func() string {
		t.Helper()
		c, err := ReadPair(certPath, keyPath, now)
		if err != nil {
			t.Fatal(err)
		}
		return pki.Serial(c.Leaf)
	}
	issue := func(ca *pki.CA, hosts []string, now time.Time) bool {
		t.Helper()
		issued, err := Issue(ca, certPath, keyPath, hosts, now)
		if err != nil {
			t.Fatal(err)
		}
		return issued
	}
	if !issue(ca, hosts, now) {
		t.Fatal("no pair: got none issued")
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key: got %v, %v; want mode 0600", fi, err)
	}
	first := serial()
	c, _ := ReadPair(certPath, keyPath, now)
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); err != nil {
		t.Errorf("issued certificate: %v", err)
	}
	if issue(ca, hosts, now) || serial() != first {
		t.Error("a current pair: got it issued again, want it kept")
	}
	if issue(ca, hosts[:1], now) {
		t.Error("fewer hosts: got it issued again, want it kept")
	}
	if issue(ca, hosts, now.Add(365*24*time.Hour-RenewBefore)) == false {
		t.Error("within RenewBefore of its end: got it kept, want a new one")
	}
	if !issue(ca, append(hosts, "attest.example"), now) {
		t.Error("a new host: got it kept, want a new one")
	}
	if !issue(testCA(t), hosts, now) {
		t.Error("another CA: got it kept, want a new one")
	}
	os.Remove(keyPath)
	if !issue(ca, hosts, now) {
		t.Error("key gone: got none issued")
	}
}
