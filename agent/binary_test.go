package agent_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The agent built as make agent builds it (static, no cgo) with a version
// stamped at link time: --version prints that version, and a failure that
// retrying cannot fix ends the program with a non-zero status and its
// reason, at once.
func TestAgentBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	const stamped = "v9.8.7-test"
	bin := filepath.Join(t.TempDir(), "attestation-agent")
	build := exec.Command("go", "build", "-trimpath",
		"-ldflags=-s -w -X github.com/attestation/attestation/internal/version.Version="+stamped,
		"-o", bin, "./cmd/attestation-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	run := func(t *testing.T, args ...string) (code int, stdout, stderr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out, errOut bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("attestation-agent %s still running after 10s; stderr:\n%s", strings.Join(args, " "), errOut.String())
		}
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}

	t.Run("version", func(t *testing.T) {
		code, out, _ := run(t, "--version")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "attestation-agent "+stamped) ||
			lines[1] != runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH {
			t.Errorf("attestation-agent --version: exit %d, printed %q; want 0 and two lines, %q first and the Go version second",
				code, out, "attestation-agent "+stamped)
		}
	})

	notDevice := filepath.Join(t.TempDir(), "tpmrm0")
	if err := os.WriteFile(notDevice, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, tpm string
		code      int
		want      string
	}{
		{"simulator not built in", "simulator", 2, `TPM "simulator": this binary was built without cgo`},
		{"TPM not a device", notDevice, 1, "not a device"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := run(t, "--server", unreachable(t), "--tpm", c.tpm, "--config-out", filepath.Join(t.TempDir(), "config"))
			if code != c.code || !strings.Contains(stderr, c.want) {
				t.Errorf("attestation-agent --tpm %s: exit %d, stderr:\n%s\nwant exit %d and %q", c.tpm, code, stderr, c.code, c.want)
			}
		})
	}
}
