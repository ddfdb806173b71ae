package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/cli"
	"github.com/attestation/attestation/controlplane/config"
	"github.com/attestation/attestation/controlplane/daemon/daemontest"
	"github.com/attestation/attestation/controlplane/pki"
)

// TestTLS: against a daemon serving TLS with a certificate of its own CA
// (--tls-self-signed), the CLI and extensions' commands trust
// DATA_DIR/ca.crt given by --ca-file or ATTESTATION_CA_FILE; without it,
// or with another CA, the error says what to pass; plain http:// still
// works from loopback.
func TestTLS(t *testing.T) {
	d := daemontest.Start(t, daemontest.Options{Config: func(c *config.Config) { c.TLSSelfSigned = true }})
	other, _, err := pki.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(otherCA, other.CertPEM(), 0o644)
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o644)
	missing := filepath.Join(t.TempDir(), "missing.pem")

	base := environ{cli.EnvURL: d.URL, cli.EnvToken: daemontest.Token}
	with := func(k, v string) environ {
		e := environ{}
		for key, val := range base {
			e[key] = val
		}
		e[k] = v
		return e
	}
	tests := []struct {
		name string
		env  environ
		args []string
		// wantErr is what stderr says; "" wants success.
		wantErr string
	}{
		{name: "--ca-file", env: base, args: []string{"--ca-file", d.CAFile, "machines", "list"}},
		{name: "ATTESTATION_CA_FILE", env: with(cli.EnvCAFile, d.CAFile), args: []string{"machines", "list"}},
		{name: "events over TLS", env: with(cli.EnvCAFile, d.CAFile), args: []string{"events", "list"}},
		{name: "plain http from loopback", env: with(cli.EnvURL, d.PlainURL), args: []string{"machines", "list"}},
		{name: "no CA file", env: base, args: []string{"machines", "list"},
			wantErr: "attestation: the daemon at " + d.URL + " presented a certificate of a CA this machine does not trust: pass --ca-file with the daemon's CA certificate (DATA_DIR/ca.crt on its machine, or its ca_cert), or set ATTESTATION_CA_FILE\n"},
		{name: "another CA", env: base, args: []string{"--ca-file", otherCA, "machines", "list"},
			wantErr: "attestation: the daemon at " + d.URL + " presented a certificate that no CA in " + otherCA + " signed: is --ca-file the daemon's CA certificate (DATA_DIR/ca.crt on its machine, or its ca_cert)?\n"},
		{name: "flag beats variable", env: with(cli.EnvCAFile, otherCA), args: []string{"--ca-file", d.CAFile, "machines", "list"}},
		{name: "missing file", env: with(cli.EnvCAFile, missing), args: []string{"machines", "list"},
			wantErr: "attestation: " + cli.EnvCAFile + ": open " + missing + ": no such file or directory\n"},
		{name: "not PEM", env: base, args: []string{"--ca-file", notPEM, "machines", "list"},
			wantErr: "attestation: --ca-file " + notPEM + ": no PEM certificate in it (want the daemon's CA certificate, DATA_DIR/ca.crt on its machine)\n"},
		{name: "https to plain http", env: with(cli.EnvURL, "https://"+daemontest.Start(t, daemontest.Options{}).Addr.String()), args: []string{"machines", "list"},
			wantErr: "does not speak TLS: use an http:// --url, or start attestationd with --tls-cert or --tls-self-signed\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.env, tc.args...)
			if tc.wantErr == "" {
				if r.code != 0 || !strings.HasPrefix(r.stdout, "ID") && !strings.HasPrefix(r.stdout, "SEQ") {
					t.Fatalf("got exit %d, stdout %q, stderr %q; want a table", r.code, r.stdout, r.stderr)
				}
				return
			}
			if first, _, _ := strings.Cut(r.stderr, "Run '"); r.code != 1 || !strings.HasSuffix(first, tc.wantErr) {
				t.Errorf("got exit %d, stderr\n%s\nwant 1 and\n%s", r.code, r.stderr, tc.wantErr)
			}
		})
	}

	t.Run("extension", func(t *testing.T) {
		r := runExt(t, base, "--ca-file", d.CAFile, "probe")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "probe: ") {
			t.Errorf("extension command with --ca-file: got exit %d, stdout %q, stderr %q; want its request answered", r.code, r.stdout, r.stderr)
		}
		r = runExt(t, base, "probe")
		if want := "presented a certificate of a CA this machine does not trust: pass --ca-file"; r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("extension command without a CA file: got exit %d, stderr %q; want %q", r.code, r.stderr, want)
		}
	})
}
