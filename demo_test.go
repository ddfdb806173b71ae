package attestation_test

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/attestation/attestation/internal/testenv"
)

// runDemo runs tools/demo.sh (make demo) with the given TPM on a free port
// and checks that it showed the whole enrollment.
func runDemo(t *testing.T, tpm, tpmFlag string) {
	if testing.Short() {
		t.Skip("builds the binaries and runs a daemon and an agent")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("bash", "tools/demo.sh", tpm)
	cmd.Env = append(os.Environ(), "DEMO_PORT="+strconv.Itoa(port), "DEMO_BIN="+t.TempDir(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tools/demo.sh %s: %v\n%s", tpm, err, out)
	}
	for _, want := range []string{
		"--tpm " + strings.ReplaceAll(tpmFlag, "PORT", strconv.Itoa(port+1)),
		"attested", // the machine listed before approval
		"State:                provisioned",
		"hostname: demo-1",           // the config the agent fetched
		`msg="waiting for approval"`, // the agent's own log
		"node.registered", "node.online", "node.provisioned", "node.configured",
		"Done. Everything is in ",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDemo(t *testing.T) { runDemo(t, "simulator", "simulator") }

// The demo's real EK check: swtpm's EK certificate against its CA, with
// --ek-policy verify.
func TestDemoSwtpm(t *testing.T) {
	testenv.Integration(t, "make demo TPM=swtpm: an EK certificate verified against --ek-roots")
	testenv.LookPath(t, "swtpm", "swtpm")
	testenv.LookPath(t, "swtpm_setup", "swtpm-tools")
	testenv.LookPath(t, "swtpm_localca", "swtpm-tools")
	runDemo(t, "swtpm", "tcp://127.0.0.1:PORT")
}
