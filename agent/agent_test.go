package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/attestation/attestation/agent/sysinit"
)

func TestParsePCRs(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		err  bool
	}{
		{in: "0-7", want: []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{in: "14, 0-2,1", want: []int{0, 1, 2, 14}},
		{in: "23", want: []int{23}},
		{in: "7-7", want: []int{7}},
		{in: "", err: true},
		{in: ",", err: true},
		{in: "24", err: true},
		{in: "-1", err: true},
		{in: "3-1", err: true},
		{in: "a-b", err: true},
		{in: "0-7-9", err: true},
	}
	for _, tt := range tests {
		got, err := ParsePCRs(tt.in)
		if (err != nil) != tt.err || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePCRs(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, _ := ParsePCRs(formatPCRs(got)); !reflect.DeepEqual(back, got) {
				t.Errorf("formatPCRs(%v) = %q does not parse back", got, formatPCRs(got))
			}
		}
	}
	if got, want := formatPCRs([]int{0, 1, 2, 3, 5, 7, 8}), "0-3,5,7-8"; got != want {
		t.Errorf("formatPCRs = %q, want %q", got, want)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 30 * time.Second}
	low := func() float64 { return 0 }
	high := func() float64 { return 0.999999 }
	tests := []struct {
		n      int
		lo, hi time.Duration
	}{
		{0, 500 * time.Millisecond, time.Second},
		{1, time.Second, 2 * time.Second},
		{2, 2 * time.Second, 4 * time.Second},
		{4, 8 * time.Second, 16 * time.Second},
		{5, 15 * time.Second, 30 * time.Second}, // capped
		{50, 15 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		if got := b.Delay(tt.n, low); got != tt.lo {
			t.Errorf("Delay(%d) with rnd=0 = %s, want %s", tt.n, got, tt.lo)
		}
		if got := b.Delay(tt.n, high); got < tt.hi-time.Millisecond || got > tt.hi {
			t.Errorf("Delay(%d) with rnd→1 = %s, want about %s", tt.n, got, tt.hi)
		}
		for range 100 {
			if got := b.Delay(tt.n, nil); got < tt.lo || got > tt.hi {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", tt.n, got, tt.lo, tt.hi)
			}
		}
	}
	// The jitter really spreads: 100 draws are not all equal.
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[b.Delay(3, nil)] = true
	}
	if len(seen) < 10 {
		t.Errorf("Delay(3) gave only %d distinct values in 100 draws", len(seen))
	}
}

func TestJitter(t *testing.T) {
	d := 30 * time.Second
	if got, want := jitter(d, 0.2, func() float64 { return 0 }), 24*time.Second; got != want {
		t.Errorf("jitter low = %s, want %s", got, want)
	}
	if got, want := jitter(d, 0.2, func() float64 { return 0.5 }), d; got != want {
		t.Errorf("jitter mid = %s, want %s", got, want)
	}
	for range 100 {
		if got := jitter(d, 0.2, nil); got < 24*time.Second || got > 36*time.Second {
			t.Fatalf("jitter = %s, want within 24s..36s", got)
		}
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseArgs(t *testing.T) {
	ca := writeTestCA(t)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(*Options) // adjusts the defaults
		err  string
	}{
		{
			name: "defaults",
			args: []string{"--server", "http://cp:9000"},
			want: func(o *Options) {},
		},
		{
			name: "environment only",
			env: map[string]string{
				"ATTESTATION_SERVER": "https://cp.example", "ATTESTATION_TPM": "tcp://127.0.0.1:2321",
				"ATTESTATION_CA": ca, "ATTESTATION_CONFIG_OUT": "/tmp/cfg", "ATTESTATION_PCRS": "0,7",
				"ATTESTATION_HEARTBEAT_INTERVAL": "1m", "ATTESTATION_ONCE": "true", "ATTESTATION_LOG_LEVEL": "debug",
			},
			want: func(o *Options) {
				o.Server, o.TPM, o.CAFile, o.ConfigOut = "https://cp.example", "tcp://127.0.0.1:2321", ca, "/tmp/cfg"
				o.PCRs, o.HeartbeatInterval, o.Once, o.LogLevel = []int{0, 7}, time.Minute, true, -4
			},
		},
		{
			name: "flags win over the environment",
			args: []string{"--server=http://flag:1", "--tpm", "tcp://flag:2321", "--pcrs", "0-2", "--once=false", "--heartbeat-interval", "5s", "--config-out", "/flag/cfg"},
			env: map[string]string{
				"ATTESTATION_SERVER": "http://env:2", "ATTESTATION_TPM": "/dev/tpm0", "ATTESTATION_PCRS": "9",
				"ATTESTATION_ONCE": "1", "ATTESTATION_HEARTBEAT_INTERVAL": "1h", "ATTESTATION_CONFIG_OUT": "/env/cfg",
			},
			want: func(o *Options) {
				o.Server, o.TPM, o.PCRs, o.HeartbeatInterval, o.ConfigOut = "http://flag:1", "tcp://flag:2321", []int{0, 1, 2}, 5*time.Second, "/flag/cfg"
			},
		},
		{name: "no server", err: "no control plane URL"},
		{name: "bad env bool", env: map[string]string{"ATTESTATION_SERVER": "http://x", "ATTESTATION_ONCE": "sometimes"}, err: "$ATTESTATION_ONCE"},
		{name: "bad env duration", env: map[string]string{"ATTESTATION_SERVER": "http://x", "ATTESTATION_HEARTBEAT_INTERVAL": "often"}, err: "$ATTESTATION_HEARTBEAT_INTERVAL"},
		{name: "bad scheme", args: []string{"--server", "tcp://x:1"}, err: "want http://"},
		{name: "bad pcrs", args: []string{"--server", "http://x", "--pcrs", "0-24"}, err: "not a PCR index"},
		{name: "short heartbeat", args: []string{"--server", "http://x", "--heartbeat-interval", "10ms"}, err: "at least 1s"},
		{name: "missing CA", args: []string{"--server", "https://x", "--ca", "/nonexistent/ca.pem"}, err: "read CA bundle"},
		{name: "CA without PEM", args: []string{"--server", "https://x", "--ca", os.Args[0]}, err: "no PEM certificate"},
		{name: "stray argument", args: []string{"--server", "http://x", "extra"}, err: `unexpected argument "extra"`},
		{name: "unknown flag", args: []string{"--sever", "http://x"}, err: "flag provided but not defined"},
		{name: "bad log level", args: []string{"--server", "http://x", "--log-level", "loud"}, err: "log level"},
		{name: "unknown TPM scheme", args: []string{"--server", "http://x", "--tpm", "mssim://x:1"}, err: `TPM "mssim://x:1": unknown scheme`},
		{name: "bad TPM address", env: map[string]string{"ATTESTATION_SERVER": "http://x", "ATTESTATION_TPM": "tcp://x"}, err: `TPM "tcp://x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			got, err := ParseArgs(tt.args, env(tt.env), &out)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseArgs() error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs() error = %v", err)
			}
			want := Options{Config: Config{
				Server:            "http://cp:9000",
				TPM:               "/dev/tpmrm0",
				ConfigOut:         "/run/attestation/config",
				PCRs:              []int{0, 1, 2, 3, 4, 5, 6, 7},
				HeartbeatInterval: 30 * time.Second,
			}}
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ParseArgs() =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestParseArgsHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := ParseArgs([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseArgs(--help) error = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{
		"--server URL  $ATTESTATION_SERVER", "--tpm TPM  $ATTESTATION_TPM", "--ca FILE  $ATTESTATION_CA",
		"--config-out PATH  $ATTESTATION_CONFIG_OUT", "default /run/attestation/config",
		"--pcrs PCRS", "--heartbeat-interval DURATION", "--once", "attestation.url=", "attestation.modules=",
		"/etc/attestation/ca.pem", "tcp://HOST:PORT", "simulator",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestInitConfig(t *testing.T) {
	tests := []struct {
		name     string
		cmdline  string
		caExists bool
		want     Config
		err      string
	}{
		{
			name:    "url and tpm",
			cmdline: "console=ttyS0 attestation.url=http://10.0.2.2:9000 attestation.tpm=tcp://10.0.2.2:2321",
			want:    Config{Server: "http://10.0.2.2:9000", TPM: "tcp://10.0.2.2:2321"},
		},
		{
			name:     "baked-in CA used when present",
			cmdline:  "attestation.url=https://cp",
			caExists: true,
			want:     Config{Server: "https://cp", CAFile: DefaultCAFile},
		},
		{
			name:     "attestation.ca wins over the baked-in CA",
			cmdline:  "attestation.url=https://cp attestation.ca=/etc/other.pem attestation.pcrs=0-3",
			caExists: true,
			want:     Config{Server: "https://cp", CAFile: "/etc/other.pem", PCRs: []int{0, 1, 2, 3}},
		},
		{name: "no url", cmdline: "quiet", err: "attestation.url="},
		{name: "bad pcrs", cmdline: "attestation.url=http://x attestation.pcrs=99", err: "attestation.pcrs"},
		{name: "bad tpm", cmdline: "attestation.url=http://x attestation.tpm=mssim://x:1", err: "unknown scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sysinit.Parse(tt.cmdline)
			got, err := InitConfig(s, tt.caExists)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("InitConfig() error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			// The CA files named here do not exist in the test: only the
			// mapping is checked, so the validation error is expected.
			if err != nil && !strings.Contains(err.Error(), "read CA bundle") {
				t.Fatalf("InitConfig() error = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("InitConfig() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// writeTestCA writes a self-signed CA certificate as PEM and returns its
// path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://10.0.0.1:9000/config/T9w8qO4Ju2Xf509NAu1Hz6O2qgaA1BCKCnAEfqUw7X8", "http://10.0.0.1:9000/config/REDACTED"},
		{"https://user:pw@cp.example/config/tok?x=1#f", "https://cp.example/config/REDACTED"},
		{"/config/tok", "/config/REDACTED"},
		{"http://cp/", "http://cp/"},
		{"http://cp/%zz", "(a config URL that does not parse)"},
	} {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
