package initramfs_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/initramfs"
)

// BenchmarkDefaultInitramfs builds the agent's initramfs as make
// boot-assets does (the static agent, the default NIC drivers of the
// installed Debian kernel with their dependencies) and reports its size,
// the agent's, and the build time per image.
func BenchmarkDefaultInitramfs(b *testing.B) {
	kernels, _ := filepath.Glob("/lib/modules/*/modules.dep")
	if len(kernels) == 0 {
		b.Skip("no kernel modules in /lib/modules (Debian package linux-image-amd64)")
	}
	k, err := initramfs.OpenKernel(filepath.Dir(kernels[len(kernels)-1]))
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), "attestation-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../../agent/cmd/attestation-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	agent, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	b.ResetTimer()
	for b.Loop() {
		buf.Reset()
		if err := initramfs.Write(&buf, initramfs.Spec{Agent: agent, Kernel: k, Modules: bootassets.DefaultModules}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len())/(1<<20), "initramfs_MB")
	b.ReportMetric(float64(len(agent))/(1<<20), "agent_MB")
}
