package agentapi_test

// The whole enrollment with swtpm, a software TPM whose EK certificate is
// issued by a local CA (swtpm_setup --create-ek-cert): the daemon runs the
// verify policy with that CA as its roots bundle, so the certificate chain
// is verified for real; the agent talks to `swtpm socket` over TCP.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agenttpm "github.com/attestation/attestation/agent/tpm"
	"github.com/attestation/attestation/controlplane/config"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// swtpm provisions a swtpm with an EK certificate from a local CA in a
// temp dir, starts it, and returns its tcp:// spec and a directory with
// the CA's certificates.
func swtpm(t *testing.T) (spec, roots string) {
	t.Helper()
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
	// swtpm_localca keeps its CA in /var/lib/swtpm-localca unless told.
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
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", ctrl),
		"--flags", "not-need-init,startup-clear")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen on %s: %v\n%s", addr, err, stderr.String())
		}
	}

	roots = filepath.Join(dir, "roots")
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
	return "tcp://" + addr, roots
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

func TestSwtpm(t *testing.T) {
	spec, roots := swtpm(t)
	tr, err := agenttpm.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agenttpm.New(tr, agenttpm.Options{})
	if err != nil {
		tr.Close()
		t.Fatalf("attester on swtpm: %v", err)
	}
	defer a.Close()
	if a.EK().Certificate == nil {
		t.Fatal("swtpm has no EK certificate in NV")
	}
	req := &attestationv1.RegisterRequest{
		EkPublic:      a.EK().Public,
		EkCertificate: a.EK().Certificate,
		AkPublic:      a.AK().Public,
		TpmAvailable:  true,
		Hardware:      &attestationv1.Hardware{Macs: []string{"52:54:00:00:00:01"}},
	}

	// A roots bundle without swtpm's CA refuses its EK certificate.
	otherCA := newCA(t, "Not swtpm's CA")
	h := start(t, func(c *config.Config) { c.EKPolicy, c.EKRoots = config.EKPolicyVerify, rootsDir(t, otherCA) })
	_, err = h.agent.Register(t.Context(), connect.NewRequest(req))
	wantCode(t, err, connect.CodePermissionDenied, "EK refused by policy verify")

	// With swtpm's CA, the whole loop.
	h = start(t, func(c *config.Config) { c.EKPolicy, c.EKRoots = config.EKPolicyVerify, roots })
	resp, err := h.agent.Register(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Register with swtpm's EK certificate: %v", err)
	}
	ch := resp.Msg
	secret, err := a.ActivateCredential(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	pcrs := make([]int, len(ch.Pcrs))
	for i, p := range ch.Pcrs {
		pcrs[i] = int(p)
	}
	q, sig, values, err := a.Quote(ch.Nonce, pcrs)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	att := &attestationv1.AttestRequest{ChallengeId: ch.ChallengeId, Secret: secret, Quote: q, QuoteSignature: sig, PcrValues: map[uint32][]byte{}}
	for i, v := range values {
		att.PcrValues[uint32(i)] = v
	}
	attested, err := h.agent.Attest(t.Context(), connect.NewRequest(att))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	h.approve(t, ch.MachineId, "worker", "swtpm-1")
	url := h.configURL(t, attested.Msg.SessionToken)
	if status, body := fetch(t, url); status != http.StatusOK || !strings.Contains(body, "swtpm-1") {
		t.Errorf("GET config: %d %q, want 200 naming swtpm-1", status, body)
	}
	if got, want := h.eventTypes(t, ch.MachineId), "registered online provisioned configured"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}
