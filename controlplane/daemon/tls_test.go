package daemon_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/listener"
	"github.com/attestation/attestation/controlplane/pki"
	"github.com/attestation/attestation/extensions"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// issuePair issues a server certificate for 127.0.0.1 and localhost from
// ca, valid from notBefore (less the CA's backdating) for life, and
// returns it and its key in PEM.
func issuePair(t *testing.T, ca *pki.CA, notBefore time.Time, life time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer(key.Public(), []string{"127.0.0.1", "localhost"}, notBefore, life)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// serialOf is the serial number of a PEM certificate.
func serialOf(t *testing.T, certPEM []byte) *big.Int {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

// writeFile writes data to path by a rename over it, as a certificate
// manager does.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writeUnseen writes data over path in place, as long as the old
// contents, and puts the old modification time back: the change is
// invisible to a poll of size, time and inode.
func writeUnseen(t *testing.T, path string, data []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(data)) {
		t.Fatalf("writeUnseen %s: %d bytes over %d", path, len(data), fi.Size())
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// handshakeSerial makes a new TLS connection to d and returns the serial
// of the certificate it is served.
func handshakeSerial(t *testing.T, d *daemontest.Daemon) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", d.Addr.String(), d.TLSConfig(t))
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// waitServed waits until a new handshake is served the certificate of
// serial, failing after within.
func waitServed(t *testing.T, d *daemontest.Daemon, serial *big.Int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := handshakeSerial(t, d)
		if got.Cmp(serial) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new handshakes: got certificate %x, want %x within %s", got, serial, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLog waits for a log line containing want.
func waitLog(t *testing.T, logs *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * listener.PollInterval)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("logs lack\n%s\ngot\n%s", want, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dialTLS is a gRPC client of d over TLS, trusting d's CA.
func dialTLS(t *testing.T, d *daemontest.Daemon) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(d.Addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(d.TLSConfig(t))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func authorized(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+daemontest.Token)
}

// listMachines calls ListMachines over conn and returns the serial of
// the certificate the connection that carried it was served (nil without
// TLS).
func listMachines(t *testing.T, conn *grpc.ClientConn) *big.Int {
	t.Helper()
	var p peer.Peer
	resp := &attestationv1.ListMachinesResponse{}
	if err := conn.Invoke(authorized(t.Context()), attestationv1connect.MachineServiceListMachinesProcedure,
		&attestationv1.ListMachinesRequest{}, resp, grpc.Peer(&p)); err != nil {
		t.Fatalf("ListMachines over gRPC: %v", err)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates[0].SerialNumber
}

// TestTLSGRPC: with TLS on, a gRPC client with TLS credentials lists
// machines over HTTP/2, and an HTTP client negotiates h2 by ALPN.
func TestTLSGRPC(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.TLSSelfSigned = true }})
	if !strings.HasPrefix(d.URL, "https://") {
		t.Fatalf("URL %s: want https://", d.URL)
	}
	if listMachines(t, dialTLS(t, d)) == nil {
		t.Error("ListMachines: got no TLS peer, want the call over TLS")
	}
	resp, err := d.Client.Get(d.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || resp.TLS == nil {
		t.Errorf("GET /healthz over TLS: got %d over %s (TLS %v), want 200 over HTTP/2 with TLS", resp.StatusCode, resp.Proto, resp.TLS != nil)
	}
}

// TestTLSPlaintextFromLoopback: with TLS on, the same port still serves
// plain HTTP/1.1, HTTP/1.0 (the CI's probe, written with bash alone) and
// h2c (gRPC without TLS) to loopback clients.
func TestTLSPlaintextFromLoopback(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.TLSSelfSigned = true }})

	t.Run("HTTP/1.1", func(t *testing.T) {
		resp, err := http.Get(d.PlainURL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.TLS != nil {
			t.Errorf("GET %s/healthz: got %d (TLS %v), want 200 in plaintext", d.PlainURL, resp.StatusCode, resp.TLS != nil)
		}
	})
	t.Run("HTTP/1.0 probe", func(t *testing.T) {
		c, err := net.Dial("tcp", d.Addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.0 200") {
			t.Errorf("probe: got %q, %v; want HTTP/1.0 200", status, err)
		}
	})
	t.Run("h2c gRPC", func(t *testing.T) {
		conn, err := grpc.NewClient(d.Addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if serial := listMachines(t, conn); serial != nil {
			t.Errorf("got a TLS peer, want plaintext")
		}
	})
}

// TestTLSSelfSigned: --tls-self-signed issues a pair from the daemon's
// CA into the data directory, the key owner-only, naming localhost and
// loopback; a client trusting DATA_DIR/ca.crt alone is served it; the
// next start keeps it.
func TestTLSSelfSigned(t *testing.T) {
	dir := t.TempDir()
	var logs lockedBuffer
	opts := daemontest.Options{
		DataDir: dir,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Config:  func(c *config.Config) { c.TLSSelfSigned = true },
	}
	d := daemontest.Start(t, opts)
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{listener.CertFile, 0o644}, {listener.KeyFile, 0o600}, {pki.CertFile, 0o644}, {pki.KeyFile, 0o600}} {
		fi, err := os.Stat(filepath.Join(dir, f.name))
		if err != nil || fi.Mode().Perm() != f.mode {
			t.Errorf("%s: got %v, %v; want mode %o", f.name, fi, err, f.mode)
		}
	}
	if d.CAFile != filepath.Join(dir, pki.CertFile) {
		t.Errorf("daemontest CAFile %s: want DATA_DIR/ca.crt", d.CAFile)
	}
	c, err := tls.Dial("tcp", d.Addr.String(), d.TLSConfig(t))
	if err != nil {
		t.Fatalf("handshake trusting DATA_DIR/ca.crt: %v", err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("served certificate: %v", err)
		}
	}
	for _, want := range []string{`msg=CA `, `created=true`, `msg="issued a TLS certificate from the CA`, `msg="TLS certificate" component=tls subject="CN=localhost" sans=localhost,127.0.0.1,::1`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `public_url=https://127.0.0.1:`) {
		t.Errorf("logs: want an https public URL by default with TLS on:\n%s", logs.String())
	}

	d.Stop(t)
	logs.mu.Lock()
	logs.b.Reset()
	logs.mu.Unlock()
	d = daemontest.Start(t, opts)
	if got := handshakeSerial(t, d); got.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after a restart: served %x, want the same certificate %x", got, leaf.SerialNumber)
	}
	if strings.Contains(logs.String(), "issued a TLS certificate") || !strings.Contains(logs.String(), "created=false") {
		t.Errorf("restart: want the CA and the certificate kept, got\n%s", logs.String())
	}
}

// TestTLSReload: a new certificate is served to new handshakes after
// SIGHUP and after its files change, while a gRPC connection opened
// before goes on with the old one and its WatchEvents stream stays open;
// a bad new pair (a key that does not match, an expired certificate) is
// logged and the current one kept.
func TestTLSReload(t *testing.T) {
	dir, certDir := t.TempDir(), t.TempDir()
	ca, _, err := pki.LoadOrCreate(dir) // the daemon's CA, created first to issue with
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key")
	certA, keyA := issuePair(t, ca, time.Now(), time.Hour)
	writeFile(t, certPath, certA)
	writeFile(t, keyPath, keyA)
	var logs lockedBuffer
	d := daemontest.Start(t, daemontest.Options{
		DataDir: dir,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Config:  func(c *config.Config) { c.TLSCert, c.TLSKey = certPath, keyPath },
	})
	// A SIGHUP that reaches the test before the daemon listens must not
	// end the test binary.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	conn := dialTLS(t, d)
	serialA := serialOf(t, certA)
	if got := listMachines(t, conn); got.Cmp(serialA) != 0 {
		t.Fatalf("first call: served %x, want %x", got, serialA)
	}
	ctx, cancel := context.WithTimeout(authorized(t.Context()), time.Minute)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, attestationv1connect.EventServiceWatchEventsProcedure)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&attestationv1.WatchEventsRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}

	t.Run("SIGHUP", func(t *testing.T) {
		// A pair of the same sizes, written so that only the signal can
		// tell: the poll of the files sees nothing.
		var certB, keyB []byte
		for certB == nil || len(certB) != len(certA) || len(keyB) != len(keyA) {
			certB, keyB = issuePair(t, ca, time.Now(), time.Hour)
		}
		writeUnseen(t, certPath, certB)
		writeUnseen(t, keyPath, keyB)
		time.Sleep(listener.PollInterval + 500*time.Millisecond) // a poll at least
		if got := handshakeSerial(t, d); got.Cmp(serialA) != 0 {
			t.Fatalf("before SIGHUP: served %x, want still %x (the change should be unseen)", got, serialA)
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitServed(t, d, serialOf(t, certB), 5*time.Second)
		want := `msg="TLS certificate reloaded" component=tls subject="CN=127.0.0.1" sans=localhost,127.0.0.1 issuer="CN=attestation CA,O=attestation" expires=`
		if !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), `reason=SIGHUP`) {
			t.Errorf("logs lack the reload with its subject, SANs and reason:\n%s", logs.String())
		}
	})
	t.Run("file changed", func(t *testing.T) {
		certC, keyC := issuePair(t, ca, time.Now(), time.Hour)
		writeFile(t, keyPath, keyC)
		writeFile(t, certPath, certC)
		waitServed(t, d, serialOf(t, certC), 5*listener.PollInterval)
		if !strings.Contains(logs.String(), `reason="file changed"`) {
			t.Errorf("logs lack the reload of a changed file:\n%s", logs.String())
		}
	})
	t.Run("bad pair kept out", func(t *testing.T) {
		const notReloaded = `level=ERROR msg="TLS certificate not reloaded: still serving the current one" component=tls `
		current := handshakeSerial(t, d)
		certD, _ := issuePair(t, ca, time.Now(), time.Hour)
		writeFile(t, certPath, certD) // the key is the old certificate's
		waitLog(t, &logs, notReloaded+`reason="file changed" err="TLS certificate `+certPath+` and key `+keyPath+`: tls: private key does not match public key"`)
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		waitLog(t, &logs, notReloaded+`reason=SIGHUP err="TLS certificate `+certPath+` and key `+keyPath+`: tls: private key does not match public key"`)
		if got := handshakeSerial(t, d); got.Cmp(current) != 0 {
			t.Errorf("a certificate without its key: served %x, want the current %x", got, current)
		}
		expired, expiredKey := issuePair(t, ca, time.Now().Add(-48*time.Hour), time.Hour)
		writeFile(t, keyPath, expiredKey)
		writeFile(t, certPath, expired)
		waitLog(t, &logs, notReloaded+`reason="file changed" err="TLS certificate `+certPath+` expired at `)
		if got := handshakeSerial(t, d); got.Cmp(current) != 0 {
			t.Errorf("an expired certificate: served %x, want the current %x", got, current)
		}
	})

	t.Run("open connection", func(t *testing.T) {
		if got := listMachines(t, conn); got.Cmp(serialA) != 0 {
			t.Errorf("the connection opened before the reloads: served %x, want still %x (the same connection)", got, serialA)
		}
		sum := sha256.Sum256([]byte(t.Name()))
		reg := &attestationv1.RegisterMachineResponse{}
		if err := conn.Invoke(authorized(t.Context()), attestationv1connect.MachineServiceRegisterMachineProcedure,
			&attestationv1.RegisterMachineRequest{EkFingerprint: hex.EncodeToString(sum[:])}, reg); err != nil {
			t.Fatal(err)
		}
		ev := &attestationv1.WatchEventsResponse{}
		if err := stream.RecvMsg(ev); err != nil {
			t.Fatalf("WatchEvents opened before the reloads: %v", err)
		}
		if ev.GetEvent().GetMachineId() != reg.GetMachine().GetId() {
			t.Errorf("WatchEvents: got %v, want the event of machine %s", ev.GetEvent(), reg.GetMachine().GetId())
		}
	})
}

// TestTLSConfigErrors: a daemon whose TLS or CA settings cannot work does
// not start, and says which setting and why.
func TestTLSConfigErrors(t *testing.T) {
	caDir := t.TempDir()
	ca, _, err := pki.LoadOrCreate(caDir)
	if err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	path := func(name string, data []byte) string {
		p := filepath.Join(files, name)
		writeFile(t, p, data)
		return p
	}
	certA, keyA := issuePair(t, ca, time.Now(), time.Hour)
	_, keyB := issuePair(t, ca, time.Now(), time.Hour)
	old, oldKey := issuePair(t, ca, time.Now().Add(-48*time.Hour), time.Hour)
	cert, key := path("a.crt", certA), path("a.key", keyA)
	missing := filepath.Join(files, "missing.pem")

	tests := []struct {
		name string
		set  func(c *config.Config)
		want string
	}{
		{"certificate without key", func(c *config.Config) { c.TLSCert = cert }, "tls_cert: set tls_key too (the certificate's private key)"},
		{"self-signed with a certificate", func(c *config.Config) { c.TLSCert, c.TLSKey, c.TLSSelfSigned = cert, key, true },
			"tls_self_signed: not with tls_cert: serve your certificate or one the daemon's CA issues, not both"},
		{"unreadable certificate", func(c *config.Config) { c.TLSCert, c.TLSKey = missing, key },
			"tls_cert: TLS certificate: open " + missing + ": no such file or directory"},
		{"unreadable key", func(c *config.Config) { c.TLSCert, c.TLSKey = cert, files },
			"tls_cert: TLS key: read " + files + ": is a directory"},
		{"key of another certificate", func(c *config.Config) { c.TLSCert, c.TLSKey = cert, path("b.key", keyB) },
			"tls_cert: TLS certificate " + cert + " and key " + filepath.Join(files, "b.key") + ": tls: private key does not match public key"},
		{"expired certificate", func(c *config.Config) { c.TLSCert, c.TLSKey = path("old.crt", old), path("old.key", oldKey) },
			"tls_cert: TLS certificate " + filepath.Join(files, "old.crt") + " expired at "},
		{"not a certificate", func(c *config.Config) { c.TLSCert, c.TLSKey = path("junk.crt", []byte("junk")), key },
			"tls_cert: TLS certificate " + filepath.Join(files, "junk.crt") + " and key " + key + ": tls: failed to find any PEM data in certificate input"},
		{"CA key missing", func(c *config.Config) { c.CACert, c.CAKey = filepath.Join(caDir, pki.CertFile), missing },
			"ca_cert: CA key: stat " + missing + ": no such file or directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Listen = "127.0.0.1:0"
			cfg.DataDir = t.TempDir()
			tc.set(&cfg)
			err := daemon.Run(t.Context(), cfg, daemon.Options{
				Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
				Extensions: []extensions.Extension{},
			})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

// TestCAFromFiles: --ca-cert and --ca-key name the CA, which then signs
// the development certificate; none is created in the data directory.
func TestCAFromFiles(t *testing.T) {
	caDir := t.TempDir()
	if _, _, err := pki.LoadOrCreate(caDir); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := daemontest.Start(t, daemontest.Options{DataDir: dir, Config: func(c *config.Config) {
		c.CACert, c.CAKey = filepath.Join(caDir, pki.CertFile), filepath.Join(caDir, pki.KeyFile)
		c.TLSSelfSigned = true
	}})
	if d.CAFile != filepath.Join(caDir, pki.CertFile) {
		t.Errorf("daemontest CAFile %s: want the configured CA", d.CAFile)
	}
	if listMachines(t, dialTLS(t, d)) == nil {
		t.Error("ListMachines: want TLS with a certificate of the configured CA")
	}
	if _, err := os.Stat(filepath.Join(dir, pki.KeyFile)); !os.IsNotExist(err) {
		t.Errorf("DATA_DIR/ca.key: got %v, want none created with --ca-key", err)
	}
}
