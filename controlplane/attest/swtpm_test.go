package attest

// The protocol against swtpm, a software TPM with a manufacturer-style EK
// certificate chain: swtpm_setup provisions the EK at 0x81010001 and its
// certificate in NV 0x01C00002, signed by a local CA made in a temp dir; the
// agent talks to `swtpm socket` over TCP.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agenttpm "github.com/attestation/attestation/agent/tpm"
)

func TestSwtpm(t *testing.T) {
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s not installed (apt-get install swtpm swtpm-tools): the swtpm integration test did not run", tool)
		}
	}
	dir := t.TempDir()
	ca, state := filepath.Join(dir, "ca"), filepath.Join(dir, "state")
	for _, d := range []string{ca, state} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// By default swtpm_localca keeps its CA in /var/lib/swtpm-localca: point
	// it at the temp dir.
	localca := write("swtpm-localca.conf", fmt.Sprintf("statedir=%s\nsigningkey=%s\nissuercert=%s\ncertserial=%s\n",
		ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")))
	options := write("swtpm-localca.options", "--platform-manufacturer Test\n--platform-version 2.1\n--platform-model Test\n")
	setup := write("swtpm_setup.conf", fmt.Sprintf("create_certs_tool=/usr/bin/swtpm_localca\ncreate_certs_tool_config=%s\ncreate_certs_tool_options=%s\n", localca, options))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "swtpm_setup", "--tpm2", "--config", setup, "--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite").CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}

	port, ctrl := freePort(t), freePort(t)
	swtpm := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ctrl),
		"--flags", "not-need-init,startup-clear")
	var stderr strings.Builder
	swtpm.Stderr = &stderr
	if err := swtpm.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() {
		swtpm.Process.Kill()
		swtpm.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitListening(t, addr, &stderr)

	tr, err := agenttpm.Open("tcp://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agenttpm.New(tr, agenttpm.Options{EK: agenttpm.RSA, AK: agenttpm.ECC})
	if err != nil {
		tr.Close()
		t.Fatalf("New: %v", err)
	}
	defer a.Close()
	ek := a.EK()
	if !ek.Persistent {
		t.Error("swtpm's provisioned EK at 0x81010001 was not used")
	}
	if ek.Certificate == nil {
		t.Fatal("no EK certificate read from NV 0x01C00002")
	}

	// The daemon's side: the roots bundle holds the local CA's root and
	// its issuing certificate.
	roots := filepath.Join(dir, "roots")
	if err := os.Mkdir(roots, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(ca, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(roots, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rootPool, interPool, err := LoadRoots(roots)
	if err != nil {
		t.Fatal(err)
	}
	ekKey, err := ParseEKPublic(ek.Public)
	if err != nil {
		t.Fatalf("ParseEKPublic: %v", err)
	}
	if fp, _ := Fingerprint(ekKey); fp != ek.Fingerprint {
		t.Errorf("daemon fingerprint %s, agent fingerprint %s", fp, ek.Fingerprint)
	}
	policy := Policy{Mode: ModeVerify, Roots: rootPool, Intermediates: interPool}
	if err := policy.CheckEK(ekKey, ek.Certificate); err != nil {
		t.Fatalf("CheckEK with the swtpm local CA: %v", err)
	}
	other := newCA(t, "Other Root", nil)
	if err := (Policy{Mode: ModeVerify, Roots: pool(other.cert), Intermediates: interPool}).CheckEK(ekKey, ek.Certificate); err == nil {
		t.Error("the swtpm EK certificate verified against an unrelated root")
	}

	// The rest of the loop.
	ak, err := ParseAKPublic(a.AK().Public)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewChallenge(ek.Public, ak.Name)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := a.ActivateCredential(c.CredentialBlob, c.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if !SecretsEqual(secret, c.Secret) {
		t.Fatal("wrong activated secret")
	}
	quote, sig, pcrs, err := a.Quote(c.Nonce, quotedPCRs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	if err := VerifyQuote(a.AK().Public, quote, sig, c.Nonce, pcrs); err != nil {
		t.Fatalf("VerifyQuote: %v", err)
	}
	if err := VerifyQuote(a.AK().Public, quote, sig, []byte("another nonce"), pcrs); err == nil {
		t.Error("quote verified with another nonce")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(t *testing.T, addr string, stderr fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen on %s: %v\n%s", addr, err, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
