//go:build cgo

package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attestation/attestation/agent/tpm"
)

// TestClientCertificate: the agent's HTTP client presents the node
// certificate to a server that asks for one, the handshake signed by the
// node key in the TPM, over TLS 1.2 and 1.3; before there is a
// certificate it presents none.
func TestClientCertificate(t *testing.T) {
	tr, err := tpm.Open("simulator")
	if err != nil {
		t.Fatal(err)
	}
	a, err := tpm.New(tr, tpm.Options{})
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	defer a.Close()
	key, err := a.NodeKey()
	if err != nil {
		t.Fatal(err)
	}

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	clients := x509.NewCertPool()
	clients.AddCert(ca)

	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, r.TLS.PeerCertificates[0].SerialNumber)
			}))
			srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients, MaxVersion: version}
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
			srv.StartTLS()
			defer srv.Close()
			caFile := filepath.Join(t.TempDir(), "server-ca.pem")
			if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := Config{Server: srv.URL, CAFile: caFile}
			cfg.setDefaults()
			cert := &nodeCert{}
			client, err := cfg.client(cert.clientCertificate)
			if err != nil {
				t.Fatal(err)
			}
			if resp, err := client.Get(srv.URL); err == nil {
				resp.Body.Close()
				t.Fatal("the server took the client without a certificate")
			}

			cert.set(tlsCertificate(leaf, key))
			client.CloseIdleConnections()
			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Fatalf("GET with the node certificate: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if string(body) != "42" {
				t.Errorf("the server saw certificate %q, want serial 42", body)
			}
		})
	}
}
