// Package swtpmtest runs swtpm, a software TPM with a manufacturer-style
// EK certificate chain, for integration tests of both sides of the
// attestation protocol.
package swtpmtest

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

	"github.com/attestation/attestation/internal/testenv"
)

// Start provisions a swtpm with an EK certificate from a local CA in a
// temp dir (swtpm_setup --create-ek-cert: the RSA EK at 0x81010001, its
// certificate in NV 0x01C00002), serves it with `swtpm socket` over TCP on
// loopback until the test ends, and returns its tcp:// spec and a
// directory holding the CA's root and issuing certificates (a roots
// bundle). It marks the test as an swtpm integration test, which skips
// visibly (or fails under CI) when swtpm is not installed.
func Start(t testing.TB) (spec, roots string) {
	t.Helper()
	testenv.Integration(t, "swtpm with an EK certificate chain")
	testenv.LookPath(t, "swtpm", "swtpm")
	testenv.LookPath(t, "swtpm_setup", "swtpm-tools")
	testenv.LookPath(t, "swtpm_localca", "swtpm-tools")
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

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
