// Package bootassetstest writes boot assets directories for tests: real
// where the code reads them (the manifest, the module index, the agent's
// initramfs, a kernel package dpkg-deb can read), stand-ins where it only
// copies them (the kernel and the boot loaders).
package bootassetstest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/initramfs"
)

// Release is the stand-in kernel's release.
const Release = "6.1.0-test-amd64"

// Dep is its modules.dep: the agent's e1000, and dummy, which needs dep.
const Dep = "kernel/drivers/net/e1000.ko:\nkernel/drivers/misc/dummy.ko: kernel/lib/dep.ko\nkernel/lib/dep.ko:\n"

// Write makes a boot assets directory and returns its path. The kernel
// package is built with dpkg-deb -b; without dpkg-deb the test is skipped.
func Write(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "boot")
	pkg := filepath.Join(t.TempDir(), "pkg")
	mods := filepath.Join(pkg, "lib", "modules", Release)
	for _, m := range []string{"kernel/drivers/net/e1000.ko", "kernel/drivers/misc/dummy.ko", "kernel/lib/dep.ko"} {
		File(t, filepath.Join(mods, m), "module "+m)
	}
	File(t, filepath.Join(mods, "modules.dep"), Dep)
	File(t, filepath.Join(mods, "modules.builtin"), "")
	File(t, filepath.Join(pkg, "DEBIAN", "control"), "Package: linux-image-test\nVersion: 1\nArchitecture: amd64\nMaintainer: test <test@example.com>\nDescription: test kernel\n")
	deb := filepath.Join(t.TempDir(), "kernel.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-b", pkg, deb).CombinedOutput(); err != nil {
		t.Skipf("dpkg-deb -b (package dpkg): %v\n%s", err, out)
	}
	k, err := initramfs.OpenKernel(mods)
	if err != nil {
		t.Fatal(err)
	}
	var initrd bytes.Buffer
	if err := initramfs.Write(&initrd, initramfs.Spec{Agent: []byte("\x7fELF agent"), Kernel: k, Modules: []string{"e1000"}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	File(t, filepath.Join(dir, bootassets.KernelDeb), string(b))
	File(t, filepath.Join(dir, bootassets.Initrd), initrd.String())
	File(t, filepath.Join(dir, bootassets.Kernel), strings.Repeat("k", 100<<10))
	File(t, filepath.Join(dir, bootassets.ISOLinux), strings.Repeat("b", 38912))
	File(t, filepath.Join(dir, bootassets.LDLinux), strings.Repeat("l", 4096))
	File(t, filepath.Join(dir, bootassets.GRUBEFI), strings.Repeat("g", 64<<10))
	File(t, filepath.Join(dir, "modules", Release, "modules.dep"), Dep)
	File(t, filepath.Join(dir, "modules", Release, "modules.builtin"), "")
	m, _ := json.Marshal(bootassets.Manifest{Release: Release, KernelPackage: "linux-image-test_1_amd64",
		Modules: []string{"e1000"}, ModulesResolved: []string{"kernel/drivers/net/e1000.ko"}})
	File(t, filepath.Join(dir, bootassets.ManifestFile), string(m))
	return dir
}

// File writes a file, making its directory.
func File(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
